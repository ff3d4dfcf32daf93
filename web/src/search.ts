// Node search: double-click the canvas (or drop a link in empty space) to find a node by fuzzy
// name, category, or socket type ("in:LATENT", "out:IMAGE"). A dropped link limits the list to
// nodes that can take (or give) its type, and wires the chosen node to it.

import { LiteGraph, type LGraphNode } from "@comfyorg/litegraph";
import type { NodeDef } from "./api";
import type { App } from "./app";
import { EDITOR_ONLY_DEFS, orderedInputs } from "./node_types";
import { el } from "./ui";
import { widgetKind } from "./widgets";

export interface LinkContext {
  /** Dragged from an output: the new node needs an input of `type`. */
  fromNode?: LGraphNode;
  fromSlot?: number;
  /** Dragged from an input: the new node needs an output of `type`. */
  toNode?: LGraphNode;
  toSlot?: number;
  type?: string;
}

function inputTypes(def: NodeDef): string[] {
  return orderedInputs(def).map(([, spec]) => (widgetKind(spec) === "COMBO" ? "COMBO" : String(spec[0])));
}

function typeMatches(a: string, b: string): boolean {
  if (a === "*" || b === "*") return true;
  const as = a.toUpperCase().split(",");
  const bs = b.toUpperCase().split(",");
  return as.some((x) => bs.includes(x));
}

/** Fuzzy score: every query character in order; consecutive and word-start hits score more. */
export function fuzzyScore(query: string, text: string): number {
  const q = query.toLowerCase();
  const t = text.toLowerCase();
  if (!q) return 1;
  const idx = t.indexOf(q);
  if (idx >= 0) return 1000 - idx * 2 - (t.length - q.length) * 0.1 + (idx === 0 ? 200 : 0);
  let score = 0;
  let ti = 0;
  let streak = 0;
  for (const ch of q) {
    const found = t.indexOf(ch, ti);
    if (found < 0) return -1;
    streak = found === ti ? streak + 1 : 0;
    const wordStart = found === 0 || /[\s_/.-]/.test(t[found - 1]) || (text[found] >= "A" && text[found] <= "Z");
    score += 10 + streak * 5 + (wordStart ? 8 : 0) - (found - ti) * 0.5;
    ti = found + 1;
  }
  return score;
}

export function searchNodes(defs: NodeDef[], query: string, link?: LinkContext): NodeDef[] {
  let text = query.trim();
  let inType: string | null = null;
  let outType: string | null = null;
  text = text.replace(/\b(in|input|out|output):(\S+)/gi, (_m, k: string, t: string) => {
    if (k.toLowerCase().startsWith("in")) inType = t;
    else outType = t;
    return "";
  }).trim();
  if (link?.fromNode && link.type) inType = link.type;
  if (link?.toNode && link.type) outType = link.type;
  const scored: [number, NodeDef][] = [];
  for (const def of defs) {
    if (def.deprecated && !text) continue;
    if (inType && !inputTypes(def).some((t) => typeMatches(t, inType!))) continue;
    if (outType && !def.output.some((t) => typeMatches(t, outType!))) continue;
    const name = def.display_name || def.name;
    const s = Math.max(fuzzyScore(text, name), fuzzyScore(text, def.name) - 1,
      fuzzyScore(text, `${def.category ?? ""}/${name}`) * 0.6);
    if (s >= 0) scored.push([s - (def.deprecated ? 100 : 0), def]);
  }
  scored.sort((a, b) => b[0] - a[0] || (a[1].display_name || a[1].name).localeCompare(b[1].display_name || b[1].name));
  return scored.map(([, d]) => d);
}

export function openSearch(app: App, screen: [number, number], link?: LinkContext, initial = ""): void {
  document.querySelector(".search-box")?.remove();
  const canvas = app.canvas;
  const rect = canvas.canvas.getBoundingClientRect();
  // (litegraph names it from the canvas element's point of view: canvas pixels -> graph "offset" space)
  const graphPos = canvas.ds.convertCanvasToOffset([screen[0] - rect.left, screen[1] - rect.top]);
  const input = el("input", { type: "search", placeholder: link?.type ? `Nodes for ${link.type}…` : "Search nodes (name, category, in:TYPE, out:TYPE)",
    value: initial, "data-testid": "search-input", autocomplete: "off" }) as HTMLInputElement;
  const list = el("ul", { class: "search-results", "data-testid": "search-results" });
  const box = el("div", { class: "search-box", "data-testid": "node-search" },
    link?.type ? el("div", { class: "search-filter" }, link.fromNode ? `takes ${link.type}` : `gives ${link.type}`) : null,
    input, list);
  const left = Math.min(screen[0], window.innerWidth - 440);
  const top = Math.min(screen[1], window.innerHeight - 380);
  Object.assign(box.style, { left: `${Math.max(8, left)}px`, top: `${Math.max(8, top)}px` });
  document.body.append(box);

  let results: NodeDef[] = [];
  let selected = 0;
  const close = () => {
    box.remove();
    document.removeEventListener("mousedown", outside, true);
  };
  const outside = (e: MouseEvent) => !box.contains(e.target as Node) && close();
  setTimeout(() => document.addEventListener("mousedown", outside, true), 0);

  const render = () => {
    results = searchNodes([...Object.values(app.info), ...EDITOR_ONLY_DEFS.filter((d) => !app.info[d.name])],
      input.value, link).slice(0, 50);
    selected = Math.min(selected, Math.max(0, results.length - 1));
    list.replaceChildren(...results.map((def, i) => el("li", {
      class: i === selected ? "selected" : "", "data-testid": "search-result", dataset: { type: def.name },
      onmousedown: (e: MouseEvent) => {
        e.preventDefault();
        choose(def);
      },
    }, el("span", { class: "r-name" }, def.display_name || def.name),
    el("span", { class: "r-cat" }, def.category ?? ""))));
    if (!results.length) list.append(el("li", { class: "muted" }, "No matching node"));
    list.children[selected]?.scrollIntoView?.({ block: "nearest" });
  };

  const choose = (def: NodeDef) => {
    close();
    const node = addNodeAt(app, def.name, graphPos as [number, number]);
    if (node && link) connectFromLink(node, link);
    app.tabs.checkChanges();
  };

  input.addEventListener("input", () => {
    selected = 0;
    render();
  });
  input.addEventListener("keydown", (e) => {
    e.stopPropagation();
    if (e.key === "ArrowDown") selected = Math.min(selected + 1, results.length - 1);
    else if (e.key === "ArrowUp") selected = Math.max(selected - 1, 0);
    else if (e.key === "Enter") {
      if (results[selected]) choose(results[selected]);
      return;
    } else if (e.key === "Escape") {
      close();
      return;
    } else return;
    e.preventDefault();
    render();
  });
  render();
  input.focus();
}

export function addNodeAt(app: App, type: string, pos: [number, number]): LGraphNode | null {
  const node = LiteGraph.createNode(type);
  if (!node) return null;
  node.pos = [pos[0], pos[1]];
  app.graph.add(node);
  app.canvas.selectNode(node);
  return node;
}

function connectFromLink(node: LGraphNode, link: LinkContext): void {
  const type = link.type ?? "*";
  if (link.fromNode && link.fromSlot !== undefined) {
    const i = node.inputs.findIndex((s) => typeMatches(String(s.type), type));
    if (i >= 0) link.fromNode.connect(link.fromSlot, node, i);
  } else if (link.toNode && link.toSlot !== undefined) {
    const o = node.outputs.findIndex((s) => typeMatches(String(s.type), type));
    if (o >= 0) node.connect(o, link.toNode, link.toSlot);
  }
}

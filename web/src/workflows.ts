// Open workflows as tabs, each its own graph with its own undo history, autosaved to
// localStorage after every change (a reload or a crashed browser loses nothing), plus loading
// any workflow JSON into a tab (unknown node types become placeholders, never dropped).

import { LGraph, type LGraphCanvas, type LGraphNode } from "@comfyorg/litegraph";
import type { App } from "./app";
import { ChangeTracker, snapshot } from "./change_tracker";
import { ensureTypesFor, type LoomNode } from "./node_types";
import { el, toast } from "./ui";

export interface Tab {
  id: string;
  name: string;
  /** The name under workflows/ on the server, once saved there. */
  savedName: string | null;
  graph: LGraph;
  tracker: ChangeTracker;
  modified: boolean;
  /** Canvas position, restored when the tab is shown again. */
  view?: { scale: number; offset: [number, number] };
}

const INDEX_KEY = "loom.tabs";
const TAB_KEY = (id: string) => `loom.tab.${id}`;

export function isWorkflow(data: any): boolean {
  return !!data && typeof data === "object" && Array.isArray(data.nodes);
}

function newId(): string {
  return Math.random().toString(36).slice(2, 10);
}

export class Tabs {
  private tabs: Tab[] = [];
  active!: Tab;
  private bar = document.getElementById("tabs")!;

  constructor(private app: App) {}

  all(): Tab[] {
    return this.tabs;
  }

  /** Opens a workflow in a new tab and shows it. */
  open(workflow: any, name = "Unsaved workflow", savedName: string | null = null): Tab {
    const graph = new LGraph();
    const tab: Tab = { id: newId(), name, savedName, graph, modified: false, tracker: null as any };
    this.configure(graph, workflow);
    tab.tracker = new ChangeTracker(graph, (wf) => this.reload(tab, wf));
    this.tabs.push(tab);
    this.activate(tab);
    this.persistIndex();
    // The undo baseline and the autosave copy right after the first frame, not before it.
    setTimeout(() => this.persist(tab), 0);
    return tab;
  }

  /** Replaces the workflow shown in a tab (keeps run-time state of nodes that stay). */
  reload(tab: Tab, workflow: any): void {
    const old = new Map<string, any>();
    for (const n of tab.graph._nodes as LoomNode[]) if (n.loom) old.set(String(n.id), n.loom);
    this.configure(tab.graph, workflow);
    for (const n of tab.graph._nodes as LoomNode[]) {
      const state = old.get(String(n.id));
      if (state && n.loom) n.loom = state;
    }
    tab.graph.setDirtyCanvas(true, true);
  }

  private configure(graph: LGraph, workflow: any): void {
    const missing = ensureTypesFor(workflow);
    (graph as any).loomDefinitions = workflow?.definitions ? structuredClone(workflow.definitions) : undefined;
    graph.configure(workflow); // callers pass a fresh object (parsed or built for this tab)
    if (missing.length) {
      toast(`Missing node types (shown in red, kept when saved): ${missing.join(", ")}`, "error", 8000);
    }
  }

  activate(tab: Tab): void {
    const canvas = this.app.canvas;
    if (this.active && this.active !== tab) {
      this.active.view = { scale: canvas.ds.scale, offset: [...canvas.ds.offset] as [number, number] };
    }
    this.active = tab;
    canvas.setGraph(tab.graph);
    const ds = tab.view ?? (tab.graph.extra as any)?.ds;
    if (ds && Array.isArray(ds.offset)) {
      canvas.ds.scale = ds.scale ?? 1;
      canvas.ds.offset[0] = ds.offset[0];
      canvas.ds.offset[1] = ds.offset[1];
    } else fitToGraph(canvas, tab.graph);
    canvas.setDirty(true, true);
    localStorage.setItem("loom.activeTab", tab.id);
    this.render();
    document.dispatchEvent(new CustomEvent("loom:tab-changed"));
  }

  close(tab: Tab): void {
    if (tab.modified && !confirm(`"${tab.name}" has unsaved changes. Close it anyway?`)) return;
    const i = this.tabs.indexOf(tab);
    this.tabs.splice(i, 1);
    localStorage.removeItem(TAB_KEY(tab.id));
    if (!this.tabs.length) {
      document.dispatchEvent(new CustomEvent("loom:new-workflow"));
      return;
    }
    if (this.active === tab) this.activate(this.tabs[Math.min(i, this.tabs.length - 1)]);
    else this.render();
    this.persistIndex();
  }

  /** Called after every gesture: records undo history and autosaves a changed tab. */
  checkChanges(): void {
    const tab = this.active;
    if (!tab) return;
    if (tab.tracker.check()) {
      tab.modified = true;
      this.persist(tab);
      this.render();
    }
  }

  /** Undo (or redo) in the active tab; the restored state is autosaved too. */
  undo(redo = false): boolean {
    const tab = this.active;
    const done = redo ? tab.tracker.redo() : tab.tracker.undo();
    if (done) {
      tab.modified = true;
      this.persist(tab);
      this.render();
    }
    return done;
  }

  markSaved(tab: Tab, savedName: string): void {
    tab.savedName = savedName;
    tab.name = savedName.replace(/\.json$/, "");
    tab.modified = false;
    this.persist(tab);
    this.render();
  }

  serialize(tab: Tab = this.active): any {
    const data = snapshot(tab.graph);
    const canvas = this.app.canvas;
    if (tab === this.active) data.extra = { ...(data.extra ?? {}), ds: { scale: canvas.ds.scale, offset: [...canvas.ds.offset] } };
    return data;
  }

  /** Writes one tab (and the list of tabs) to localStorage. */
  persist(tab: Tab): void {
    try {
      if (!this.tabs.includes(tab)) return; // closed meanwhile
      localStorage.setItem(TAB_KEY(tab.id), tab.tracker.current);
    } catch (e) {
      console.warn("autosave failed (storage full?)", e);
    }
    this.persistIndex();
  }

  private persistIndex(): void {
    const index = this.tabs.map((t) => ({ id: t.id, name: t.name, savedName: t.savedName, modified: t.modified }));
    localStorage.setItem(INDEX_KEY, JSON.stringify(index));
  }

  /** Reopens the tabs of the last session; false when there were none. */
  restore(): boolean {
    let index: any[] = [];
    try {
      index = JSON.parse(localStorage.getItem(INDEX_KEY) ?? "[]");
    } catch {
      index = [];
    }
    const activeId = localStorage.getItem("loom.activeTab");
    let toActivate: Tab | null = null;
    for (const entry of Array.isArray(index) ? index : []) {
      let workflow: any;
      try {
        workflow = JSON.parse(localStorage.getItem(TAB_KEY(entry.id)) ?? "null");
      } catch {
        continue;
      }
      if (!isWorkflow(workflow)) continue;
      const graph = new LGraph();
      try {
        this.configure(graph, workflow);
      } catch (e) {
        console.warn("could not restore a tab", e);
        continue;
      }
      const tab: Tab = { id: entry.id, name: entry.name ?? "Workflow", savedName: entry.savedName ?? null, graph,
        modified: !!entry.modified, tracker: null as any };
      tab.tracker = new ChangeTracker(graph, (wf) => this.reload(tab, wf));
      this.tabs.push(tab);
      if (entry.id === activeId) toActivate = tab;
    }
    if (!this.tabs.length) return false;
    this.activate(toActivate ?? this.tabs[0]);
    return true;
  }

  render(): void {
    this.bar.replaceChildren(...this.tabs.map((tab) => el("div", {
      class: `tab${tab === this.active ? " active" : ""}`, title: tab.savedName ?? tab.name,
      "data-testid": "tab", dataset: { tabId: tab.id },
      onmousedown: (e: MouseEvent) => {
        if (e.button === 1) this.close(tab);
        else if (tab !== this.active) this.activate(tab);
      },
    }, el("span", { class: "tab-name" }, tab.name + (tab.modified ? " •" : "")),
    el("button", { type: "button", class: "tab-close", title: "Close", "data-testid": "tab-close",
      onmousedown: (e: MouseEvent) => e.stopPropagation(),
      onclick: () => this.close(tab) }, "×"))),
    el("button", { type: "button", class: "tab-new", title: "New workflow", "data-testid": "tab-new",
      onclick: () => document.dispatchEvent(new CustomEvent("loom:new-workflow")) }, "+"));
  }
}

/** Shows the whole graph (a workflow opened without a saved view). */
export function fitToGraph(canvas: LGraphCanvas, graph: LGraph): void {
  const nodes = graph._nodes;
  const width = canvas.canvas.clientWidth;
  const height = canvas.canvas.clientHeight;
  if (!nodes.length || !width) return;
  let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const n of nodes) {
    x0 = Math.min(x0, n.pos[0]);
    y0 = Math.min(y0, n.pos[1] - 30);
    x1 = Math.max(x1, n.pos[0] + n.size[0]);
    y1 = Math.max(y1, n.pos[1] + n.size[1]);
  }
  const pad = 40;
  const scale = Math.min(1, width / (x1 - x0 + pad * 2), height / (y1 - y0 + pad * 2));
  const s = Math.max(0.6, scale); // below this, text is too small to read: let it overflow
  canvas.ds.scale = s;
  // screen = (graph + offset) * scale: centre horizontally, top margin of `pad` pixels.
  // (a graph too wide even at the smallest readable zoom starts at the left edge)
  canvas.ds.offset[0] = Math.max((width / s - (x1 - x0)) / 2 - x0, pad / s - x0);
  canvas.ds.offset[1] = pad / s - y0;
}

export function nodeById(graph: LGraph, id: string | number): LGraphNode | undefined {
  return graph.getNodeById(Number(id)) ?? graph.getNodeById(id as any) ?? undefined;
}

// Keyboard shortcuts (one table, also shown in the help panel) and the editing commands they
// run: bypass, mute, group, undo/redo, align.

import { LGraphGroup, type LGraphNode } from "@comfyorg/litegraph";
import { api } from "./api";
import type { App } from "./app";
import type { Execution } from "./execution";
import { dialog, el, toast } from "./ui";
import { openFromServer, saveWorkflow } from "./workflow_menu";
import CANVAS_SHORTCUTS from "./canvas_shortcuts.json";

const BYPASS = 4;
const NEVER = 2;

export function selectedNodes(app: App): LGraphNode[] {
  return Object.values(app.canvas.selected_nodes ?? {});
}

export function toggleMode(app: App, mode: number): void {
  const nodes = selectedNodes(app);
  if (!nodes.length) return;
  const all = nodes.every((n) => n.mode === mode);
  for (const n of nodes) n.mode = all ? 0 : mode;
  app.graph.setDirtyCanvas(true, true);
  app.tabs.checkChanges();
}

export function groupSelected(app: App): void {
  const nodes = selectedNodes(app);
  if (!nodes.length) return;
  const group = new LGraphGroup("Group");
  group.resizeTo(nodes, 10);
  app.graph.add(group);
  app.tabs.checkChanges();
}

export function undo(app: App): void {
  if (!app.tabs.undo()) toast("Nothing to undo");
}

export function redo(app: App): void {
  if (!app.tabs.undo(true)) toast("Nothing to redo");
}

interface Shortcut {
  keys: string;
  what: string;
  match?: (e: KeyboardEvent) => boolean;
  run?: () => unknown;
}

/** Whether a key event is the one a label such as "Ctrl+Shift+S" or "Ctrl+Y / Ctrl+Shift+Z"
 *  names: its modifiers down, the others up (Shift is not checked for a symbol such as "?",
 *  which some layouts type with it). The help shows the label, so the two cannot disagree. */
export function keyMatcher(label: string): (e: KeyboardEvent) => boolean {
  const combos = label.split(" / ").map((combo) => {
    const parts = combo.split("+");
    const key = parts.pop()!.toLowerCase();
    const symbol = key.length === 1 && !/[a-z0-9]/.test(key);
    return (e: KeyboardEvent) =>
      (e.ctrlKey || e.metaKey) === parts.includes("Ctrl") && e.altKey === parts.includes("Alt") &&
      (symbol || e.shiftKey === parts.includes("Shift")) && e.key.toLowerCase() === key;
  });
  return (e) => combos.some((matches) => matches(e));
}

export function initShortcuts(app: App, execution: Execution): Shortcut[] {
  const ctrl = (e: KeyboardEvent) => e.ctrlKey || e.metaKey;
  const batch = () => Math.max(1, Number((document.getElementById("batch-count") as HTMLInputElement).value) || 1);
  const bound: [string, string, () => unknown][] = [
    ["Ctrl+Enter", "Queue the workflow (batch count times)", () => execution.queue(batch())],
    ["Ctrl+Shift+Enter", "Queue at the front", () => execution.queue(batch(), true)],
    ["Ctrl+Alt+Enter", "Interrupt the running prompt", () => api.interrupt()],
    ["Ctrl+S", "Save the workflow on the server", () => saveWorkflow(app)],
    ["Ctrl+Shift+S", "Save as…", () => saveWorkflow(app, true)],
    ["Ctrl+O", "Open a saved workflow", () => openFromServer(app)],
    ["Ctrl+Z", "Undo", () => undo(app)],
    ["Ctrl+Y / Ctrl+Shift+Z", "Redo", () => redo(app)],
    ["Ctrl+B", "Bypass the selected nodes (inputs pass through)", () => toggleMode(app, BYPASS)],
    ["Ctrl+M", "Mute the selected nodes", () => toggleMode(app, NEVER)],
    ["Ctrl+G", "Group the selected nodes", () => groupSelected(app)],
    ["R", "Refresh model and image lists", () => app.refreshNodeDefs().then(() => toast("Node lists refreshed", "ok"))],
    ["?", "This help", () => showHelp(table)],
  ];
  const table: Shortcut[] = [
    ...bound.map(([keys, what, run]) => ({ keys, what, match: keyMatcher(keys), run })),
    // Handled by the canvas and its menus; listed in the help.
    ...CANVAS_SHORTCUTS.map(([keys, what]) => ({ keys, what })),
  ];
  document.addEventListener("keydown", (e) => {
    const t = e.target as HTMLElement;
    const typing = t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable);
    if (typing && !(ctrl(e) && e.key === "Enter")) return;
    if (document.querySelector(".backdrop")) return;
    for (const s of table) {
      if (s.match?.(e) && s.run) {
        e.preventDefault();
        e.stopPropagation();
        s.run();
        return;
      }
    }
  }, true);
  document.getElementById("help-button")!.addEventListener("click", () => showHelp(table));
  return table;
}

function showHelp(table: Shortcut[]): void {
  if (document.querySelector("[data-testid=help-panel]")) return;
  dialog("Keyboard shortcuts", el("table", { class: "shortcuts" },
    ...table.map((s) => el("tr", {}, el("td", {}, el("kbd", {}, s.keys)), el("td", {}, s.what)))), { testid: "help-panel" });
}

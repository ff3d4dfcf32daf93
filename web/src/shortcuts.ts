// Keyboard shortcuts (one table, also shown in the help panel) and the editing commands they
// run: bypass, mute, group, undo/redo, align.

import { LGraphGroup, type LGraphNode } from "@comfyorg/litegraph";
import { api } from "./api";
import type { App } from "./app";
import type { Execution } from "./execution";
import { dialog, el, toast } from "./ui";
import { openFromServer, saveWorkflow } from "./workflow_menu";

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
  run?: () => void;
}

export function initShortcuts(app: App, execution: Execution): Shortcut[] {
  const ctrl = (e: KeyboardEvent) => e.ctrlKey || e.metaKey;
  const batch = () => Math.max(1, Number((document.getElementById("batch-count") as HTMLInputElement).value) || 1);
  const table: Shortcut[] = [
    { keys: "Ctrl+Enter", what: "Queue the workflow (batch count times)", match: (e) => ctrl(e) && !e.shiftKey && !e.altKey && e.key === "Enter", run: () => execution.queue(batch()) },
    { keys: "Ctrl+Shift+Enter", what: "Queue at the front", match: (e) => ctrl(e) && e.shiftKey && e.key === "Enter", run: () => execution.queue(batch(), true) },
    { keys: "Ctrl+Alt+Enter", what: "Interrupt the running prompt", match: (e) => ctrl(e) && e.altKey && e.key === "Enter", run: () => api.interrupt() },
    { keys: "Ctrl+S", what: "Save the workflow on the server", match: (e) => ctrl(e) && !e.shiftKey && e.key.toLowerCase() === "s", run: () => saveWorkflow(app) },
    { keys: "Ctrl+Shift+S", what: "Save as…", match: (e) => ctrl(e) && e.shiftKey && e.key.toLowerCase() === "s", run: () => saveWorkflow(app, true) },
    { keys: "Ctrl+O", what: "Open a saved workflow", match: (e) => ctrl(e) && e.key.toLowerCase() === "o", run: () => openFromServer(app) },
    { keys: "Ctrl+Z", what: "Undo", match: (e) => ctrl(e) && !e.shiftKey && e.key.toLowerCase() === "z", run: () => undo(app) },
    { keys: "Ctrl+Y / Ctrl+Shift+Z", what: "Redo", match: (e) => ctrl(e) && (e.key.toLowerCase() === "y" || (e.shiftKey && e.key.toLowerCase() === "z")), run: () => redo(app) },
    { keys: "Ctrl+B", what: "Bypass the selected nodes (inputs pass through)", match: (e) => ctrl(e) && e.key.toLowerCase() === "b", run: () => toggleMode(app, BYPASS) },
    { keys: "Ctrl+M", what: "Mute the selected nodes", match: (e) => ctrl(e) && e.key.toLowerCase() === "m", run: () => toggleMode(app, NEVER) },
    { keys: "Ctrl+G", what: "Group the selected nodes", match: (e) => ctrl(e) && e.key.toLowerCase() === "g", run: () => groupSelected(app) },
    { keys: "R", what: "Refresh model and image lists", match: (e) => !ctrl(e) && !e.altKey && e.key === "r", run: () => app.refreshNodeDefs().then(() => toast("Node lists refreshed", "ok")) },
    { keys: "?", what: "This help", match: (e) => e.key === "?", run: () => showHelp(table) },
    { keys: "Ctrl+C / Ctrl+V", what: "Copy / paste nodes (also into another tab)" },
    { keys: "Ctrl+Shift+V", what: "Paste keeping input links" },
    { keys: "Ctrl+A", what: "Select all nodes" },
    { keys: "Delete", what: "Delete the selection" },
    { keys: "Ctrl+drag / Shift+click", what: "Select several nodes" },
    { keys: "Double-click canvas", what: "Search nodes (fuzzy; in:TYPE, out:TYPE)" },
    { keys: "Drop a link on the canvas", what: "Search nodes that fit the link" },
    { keys: "Right-click", what: "Menus: add node, group, align, mode, colours…" },
    { keys: "Space+drag / drag canvas", what: "Pan; wheel zooms" },
    { keys: "Click a link's midpoint", what: "Link menu: add a node or a reroute, delete" },
    { keys: "Alt+click a link", what: "Add a reroute there" },
    { keys: "Double-click an output image", what: "Show it full size" },
    { keys: "Esc", what: "Close dialogs and menus" },
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

// Boots the editor: fetch the server's nodes, set up the canvas, restore the open tabs (or open
// the default txt2img workflow), then wire the panels, menus, shortcuts and websocket.

import "@comfyorg/litegraph/style.css";
import "./styles.css";
import { LGraph, LGraphCanvas, LGraphNode, LiteGraph } from "@comfyorg/litegraph";
import { api, type ObjectInfo } from "./api";
import { createApp, type App } from "./app";
import { Connection } from "./connection";
import { positionBubbles } from "./errors";
import { Execution } from "./execution";
import { Gallery } from "./gallery";
import { initImageUpload } from "./image_upload";
import { LAYOUT } from "./layout";
import { initMaskEditor, openMaskEditor } from "./mask_editor";
import { registerEditorOnlyTypes, registerNodeTypes } from "./node_types";
import { QueuePanel } from "./queue_panel";
import { openSearch } from "./search";
import { initShortcuts, selectedNodes, toggleMode } from "./shortcuts";
import { applyTheme, applyTypeColors, currentTheme, initialTheme } from "./theme";
import { toast } from "./ui";
import { closeTextEditor } from "./widgets";
import { initWorkflowMenus, newWorkflow } from "./workflow_menu";
import { Tabs } from "./workflows";

async function fetchObjectInfo(): Promise<ObjectInfo> {
  for (let delay = 500; ; delay = Math.min(delay * 2, 5000)) {
    try {
      return await api.objectInfo();
    } catch (e) {
      console.warn("waiting for the server…", e);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

const FAR_ZOOM = 0.3;
let mainCanvas: LGraphCanvas | null = null;

function configureLiteGraph(): void {
  const L = LiteGraph as any;
  L.release_link_on_empty_shows_menu = true; // a link dropped on the canvas opens our search
  L.alt_drag_do_clone_nodes = true;
  L.middle_click_slot_add_default_node = true;
  L.catch_exceptions = true;
  L.snaps_for_comfy = true;
  L.ctrl_shift_v_paste_connect_unselected_outputs = true;
  // Mode drawing: muted nodes fade, bypassed ones turn purple (as ComfyUI users expect).
  const drawNode = LGraphCanvas.prototype.drawNode;
  LGraphCanvas.prototype.drawNode = function (node: LGraphNode, ctx: CanvasRenderingContext2D) {
    if (node.mode === 2) {
      const alpha = this.editor_alpha;
      this.editor_alpha = 0.4;
      try {
        drawNode.call(this, node, ctx);
      } finally {
        this.editor_alpha = alpha;
      }
    } else drawNode.call(this, node, ctx);
  };
  // Zoomed far out, widgets and sockets are specks: skip them (a 2,000-node overview pans
  // at a fraction of the cost).
  const drawWidgets = (LGraphCanvas.prototype as any).drawNodeWidgets;
  (LGraphCanvas.prototype as any).drawNodeWidgets = function (this: LGraphCanvas, ...args: any[]) {
    if (this.ds.scale >= FAR_ZOOM) drawWidgets.apply(this, args);
  };
  const drawSlots = (LGraphNode.prototype as any).drawSlots;
  (LGraphNode.prototype as any).drawSlots = function (this: LGraphNode, ...args: any[]) {
    if ((mainCanvas?.ds.scale ?? 1) >= FAR_ZOOM) drawSlots.apply(this, args);
  };
  const bg = Object.getOwnPropertyDescriptor(LGraphNode.prototype, "renderingBgColor")!;
  Object.defineProperty(LGraphNode.prototype, "renderingBgColor", {
    configurable: true,
    get() {
      return this.mode === 4 ? "#5b2a73" : bg.get!.call(this);
    },
  });
}

/** Node titles and labels repeat across a big graph; measuring each once saves most of the
 * time of loading one (setting ctx.font and measuring are slow in canvas 2D). */
function memoizeTextMeasuring(): void {
  const L = LGraphCanvas as any;
  const measure = L._measureText;
  if (!measure) return;
  const cache = new Map<string, number>();
  L._measureText = (text: string, font?: string) => {
    const key = `${font ?? ""}\n${text}`;
    let width = cache.get(key);
    if (width === undefined) {
      if (cache.size > 20000) cache.clear();
      width = measure(text, font) as number;
      cache.set(key, width);
    }
    return width;
  };
}

function setUpCanvas(app: App): void {
  const canvas = app.canvas;
  canvas.allow_searchbox = true;
  canvas.show_info = false;
  canvas.render_canvas_border = false;
  canvas.low_quality_zoom_threshold = 0.45;
  (canvas as any).showSearchBox = (event: MouseEvent, ctx?: any) => {
    const link = ctx?.node_from
      ? { fromNode: ctx.node_from, fromSlot: ctx.node_from.outputs.indexOf(ctx.slot_from), type: String(ctx.type_filter_in ?? ctx.slot_from?.type) }
      : ctx?.node_to
        ? { toNode: ctx.node_to, toSlot: ctx.node_to.inputs.indexOf(ctx.slot_to ?? ctx.slot_from), type: String(ctx.type_filter_out ?? ctx.slot_from?.type) }
        : undefined;
    openSearch(app, [event.clientX, event.clientY], link);
  };
  // Dropping a link in empty space: search among the nodes that fit it.
  (canvas as any).showConnectionMenu = (o: any) => {
    const e = o.e as MouseEvent;
    if (o.nodeFrom) {
      openSearch(app, [e.clientX, e.clientY], { fromNode: o.nodeFrom, fromSlot: o.nodeFrom.outputs.indexOf(o.slotFrom), type: String(o.slotFrom?.type) });
    } else if (o.nodeTo) {
      openSearch(app, [e.clientX, e.clientY], { toNode: o.nodeTo, toSlot: o.nodeTo.inputs.indexOf(o.slotTo), type: String(o.slotTo?.type) });
    }
  };
  (canvas as any).getExtraMenuOptions = () => [
    null,
    { content: "Search nodes…", callback: (_v: any, _o: any, e: MouseEvent) => openSearch(app, [e.clientX, e.clientY]) },
  ];
  (LGraphNode.prototype as any).getExtraMenuOptions = function (this: LGraphNode) {
    const items: any[] = [
      { content: this.mode === 4 ? "Remove bypass" : "Bypass (Ctrl+B)", callback: () => withSelection(app, this, () => toggleMode(app, 4)) },
      { content: this.mode === 2 ? "Unmute" : "Mute (Ctrl+M)", callback: () => withSelection(app, this, () => toggleMode(app, 2)) },
    ];
    if (this.type === "LoadImage" || (app.info[this.type ?? ""]?.input?.required as any)?.image?.[1]?.image_upload) {
      items.push({ content: "Open in mask editor", callback: () => openMaskEditor(app, this) });
    }
    return items;
  };

  // On high-DPI screens the canvas holds devicePixelRatio device pixels per CSS pixel and its
  // context is scaled to match (litegraph divides by devicePixelRatio when compositing).
  const wrap = document.getElementById("canvas-wrap")!;
  const resize = () => {
    const dpr = Math.max(1, window.devicePixelRatio || 1);
    const w = wrap.clientWidth;
    const h = wrap.clientHeight;
    canvas.canvas.style.width = `${w}px`;
    canvas.canvas.style.height = `${h}px`;
    const before = canvas.canvas.width;
    canvas.resize(Math.round(w * dpr), Math.round(h * dpr));
    if (canvas.canvas.width !== before || dpr !== 1) canvas.canvas.getContext("2d")!.setTransform(dpr, 0, 0, dpr, 0, 0);
    canvas.setDirty(true, true);
  };
  window.matchMedia?.("(resolution: 1dppx)").addEventListener?.("change", resize);
  new ResizeObserver(resize).observe(wrap);
  resize();

  const draw = canvas.draw.bind(canvas);
  canvas.draw = (front?: boolean, back?: boolean) => {
    draw(front, back);
    positionBubbles(canvas);
  };
  // Every gesture may have edited the graph: record undo history and autosave.
  const check = () => setTimeout(() => app.tabs.checkChanges(), 0);
  canvas.canvas.addEventListener("pointerup", check);
  canvas.canvas.addEventListener("pointerdown", () => closeTextEditor());
  document.addEventListener("keyup", check);
  document.addEventListener("loom:graph-edited", check);
  setInterval(() => app.tabs.checkChanges(), 2000);
  window.addEventListener("beforeunload", () => app.tabs.checkChanges());
}

function withSelection(app: App, node: LGraphNode, run: () => void): void {
  if (!selectedNodes(app).includes(node)) app.canvas.selectNode(node);
  run();
}

function setUpToolbar(app: App, execution: Execution): void {
  const batch = document.getElementById("batch-count") as HTMLInputElement;
  document.getElementById("queue-button")!.addEventListener("click", () => execution.queue(Math.max(1, Number(batch.value) || 1)));
  document.getElementById("interrupt-button")!.addEventListener("click", () => api.interrupt().then(() => toast("Interrupting…")));
  document.getElementById("theme-button")!.addEventListener("click", () => applyTheme(currentTheme() === "dark" ? "light" : "dark", app.canvas));
  const status = document.getElementById("connection")!;
  app.conn.on("connection", (state: string) => {
    status.dataset.state = state;
    status.textContent = state === "open" ? "connected" : state === "reconnecting" ? "reconnecting…" : "connecting…";
  });
  app.conn.on("reconnected", () => {
    toast("Reconnected to the server", "ok");
    app.refreshNodeDefs().catch(() => undefined);
  });
  for (const button of document.querySelectorAll<HTMLButtonElement>(".side-tabs button")) {
    button.addEventListener("click", () => {
      for (const b of document.querySelectorAll(".side-tabs button")) b.classList.toggle("active", b === button);
      for (const p of document.querySelectorAll<HTMLElement>("#sidebar .panel")) p.hidden = p.id !== `${button.dataset.panel}-panel`;
    });
  }
}

async function boot(): Promise<void> {
  applyTheme(initialTheme());
  configureLiteGraph();
  const conn = new Connection();
  const info = await fetchObjectInfo();
  registerNodeTypes(info);
  registerEditorOnlyTypes();
  const canvasEl = document.getElementById("graph-canvas") as HTMLCanvasElement;
  const canvas = new LGraphCanvas(canvasEl, new LGraph());
  mainCanvas = canvas;
  memoizeTextMeasuring();
  const app = createApp(info, canvas, conn);
  applyTheme(currentTheme(), canvas);
  applyTypeColors(canvas);
  app.tabs = new Tabs(app);
  setUpCanvas(app);
  initImageUpload(app);
  initMaskEditor(app);
  const execution = new Execution(app);
  setUpToolbar(app, execution);
  initWorkflowMenus(app);
  initShortcuts(app, execution);
  new QueuePanel(app);
  const gallery = new Gallery(app);
  gallery.refresh();
  document.addEventListener("loom:new-workflow", () => newWorkflow(app));
  if (!app.tabs.restore()) newWorkflow(app);
  conn.connect();
  (window as any).loom = { app, execution, LiteGraph };
  document.body.dataset.ready = "1";
}

document.body.insertAdjacentHTML("afterbegin", LAYOUT);
boot().catch((e) => {
  console.error(e);
  toast(`The editor failed to start: ${e?.message ?? e}`, "error", 60000);
});

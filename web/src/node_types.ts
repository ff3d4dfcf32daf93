// Node classes from /object_info: one litegraph node type per server node, with typed sockets,
// widgets (each with its own socket, so a widget becomes an input by wiring it), and drawing of
// what happens at run time (running outline, step progress, errors, images).
// Types a loaded workflow names but the server lacks become red placeholders that keep their
// sockets, links and widget values, so saving loses nothing.

import { LGraphNode, LiteGraph, RenderShape, type LGraph } from "@comfyorg/litegraph";
import type { InputSpec, NodeDef, ObjectInfo } from "./api";
import { addInputWidget, comboValues, multilineTextWidget, widgetKind } from "./widgets";
import { drawNodeImages, imageAt, type NodeImages } from "./node_images";
import { showFullSize } from "./gallery";
import { drawInputErrors } from "./errors";

export interface NodeRunState {
  running?: boolean;
  /** Validation or execution errors: node-level messages and per-input ones. */
  error?: { message: string; inputs: Record<string, string>; traceback?: string[] };
  images?: NodeImages;
}

export type LoomNode = LGraphNode & {
  loom: NodeRunState;
  loomDef?: NodeDef;
};

export const MISSING_COLOR = "#a33";
const MIN_WIDTH = 220;

/** Inputs in declaration order: (name, spec, optional). */
export function orderedInputs(def: NodeDef): [string, InputSpec, boolean][] {
  const out: [string, InputSpec, boolean][] = [];
  for (const section of ["required", "optional"] as const) {
    const specs = def.input?.[section] ?? {};
    const order = def.input_order?.[section] ?? Object.keys(specs);
    for (const name of order) if (specs[name]) out.push([name, specs[name], section === "optional"]);
  }
  return out;
}

function socketType(spec: InputSpec): string {
  const kind = widgetKind(spec);
  if (kind === "COMBO") return "COMBO";
  return Array.isArray(spec[0]) ? "COMBO" : String(spec[0]);
}

function addRunStateDrawing(node: LoomNode): void {
  node.loom = {};
  node.strokeStyles["running"] = function (this: LGraphNode) {
    if ((this as LoomNode).loom?.running) return { color: "#3c3", lineWidth: 3, padding: 6 };
  };
  node.strokeStyles["loomError"] = function (this: LGraphNode) {
    if ((this as LoomNode).loom?.error) return { color: "#e33", lineWidth: 3, padding: 6 };
  };
}

/** Registers (or re-registers) a node type for every server node. */
export function registerNodeTypes(info: ObjectInfo): void {
  for (const def of Object.values(info)) registerNodeType(def);
}

function registerNodeType(def: NodeDef): void {
  const inputs = orderedInputs(def);
  class ServerNode extends LGraphNode {
    static title = def.display_name || def.name;
    static loomDef = def;
    static loomCategory = def.category ?? "";
    static defaultSize: [number, number] | null = null;
    declare loom: NodeRunState;
    loomDef = def;
    serialize_widgets = true;

    constructor(title?: string) {
      super(title ?? ServerNode.title);
      addRunStateDrawing(this as unknown as LoomNode);
      // litegraph re-measures the node after every socket and widget added; measure once below.
      (this as any).expandToFitContent = () => {};
      let uploadAfter = false;
      let optionalStarted = false;
      for (const [name, spec, optional] of inputs) {
        if (optional && !optionalStarted) {
          optionalStarted = true;
          if (uploadAfter) this.addUploadButton();
          uploadAfter = false;
        }
        const extra: any = { label: name };
        if (optional) extra.shape = RenderShape.HollowCircle;
        const tooltip = spec[1]?.tooltip;
        if (tooltip) extra.tooltip = tooltip;
        if (widgetKind(spec)) {
          const widget = addInputWidget(this, name, spec);
          this.addInput(name, socketType(spec), { ...extra, widget: { name: widget.name } });
          if (spec[1]?.image_upload) uploadAfter = true;
        } else {
          this.addInput(name, String(spec[0]), extra);
        }
      }
      if (uploadAfter) this.addUploadButton();
      def.output.forEach((type, i) => {
        const extra: any = {};
        if (def.output_is_list?.[i]) extra.shape = RenderShape.GRID;
        if (def.output_tooltips?.[i]) extra.tooltip = def.output_tooltips[i];
        this.addOutput(def.output_name?.[i] ?? type, type, extra);
      });
      // Measuring text is the costly part of making a node: do it once per type (a workflow of
      // 2,000 nodes would otherwise spend most of its load time here).
      if (!ServerNode.defaultSize) {
        const size = this.computeSize();
        ServerNode.defaultSize = [Math.max(MIN_WIDTH, size[0]), size[1] + (inputs.some(([, s]) => s[1]?.multiline) ? 80 : 0)];
      }
      this.size = [ServerNode.defaultSize[0], ServerNode.defaultSize[1]];
      delete (this as any).expandToFitContent;
    }

    addUploadButton(): void {
      // ComfyUI stores the button's value ("image") after the combo; keep that for compatibility.
      const button = this.addWidget("button", "upload", "image", () => {
        document.dispatchEvent(new CustomEvent("loom:upload-image", { detail: { node: this } }));
      }, {});
      button.label = "choose file to upload";
    }

    onWidgetChanged(name: string, value: unknown): void {
      document.dispatchEvent(new CustomEvent("loom:widget-changed", { detail: { node: this, name, value } }));
    }

    onConfigure(): void {
      // Workflows from older editors list only the widgets that were converted to inputs: give
      // every other widget its socket too, at the end (saved links address slots by index).
      for (const [name, spec] of inputs) {
        if (!widgetKind(spec) || this.inputs.some((i: any) => i.widget?.name === name || i.name === name)) continue;
        const widget = this.widgets?.find((w) => w.name === name);
        if (widget) this.addInput(name, socketType(spec), { label: name, widget: { name } } as any);
      }
      for (const [name, spec] of inputs) {
        if (!spec[1]?.image_upload) continue;
        const value = this.widgets?.find((w) => w.name === name)?.value;
        document.dispatchEvent(new CustomEvent("loom:widget-changed", { detail: { node: this, name, value } }));
      }
    }

    onDrawBackground(ctx: CanvasRenderingContext2D): void {
      drawNodeImages(this as unknown as LoomNode, ctx);
    }

    onDrawForeground(ctx: CanvasRenderingContext2D): void {
      drawInputErrors(this as unknown as LoomNode, ctx);
    }

    onDblClick(_e: unknown, pos: [number, number]): void {
      const url = imageAt(this, pos[0], pos[1]);
      if (url) showFullSize(url);
    }
  }
  Object.defineProperty(ServerNode, "name", { value: def.name });
  LiteGraph.registerNodeType(def.name, ServerNode);
  (ServerNode as any).category = def.category ?? "";
}

/** A stand-in for a node type the server does not have: keeps its sockets, links, widget
 * values and properties exactly as saved. "missing" ones are drawn red; "kept" ones (ComfyUI's
 * PrimitiveNode, subgraph instances) are editor constructs the server converts itself. */
function registerPlaceholder(type: string, kind: "missing" | "kept", label: string): void {
  const colors = kind === "missing" ? { color: MISSING_COLOR, bgcolor: "#4a1c1c" } : { color: "#3d4656", bgcolor: "#2b303a" };
  class Placeholder extends LGraphNode {
    static title = type;
    static loomMissing = kind === "missing";
    static loomKept = true;
    static skip_list = true;
    declare loom: NodeRunState;
    serialize_widgets = true;
    savedWidgets: unknown = undefined;

    constructor(title?: string) {
      super(title ?? type);
      addRunStateDrawing(this as unknown as LoomNode);
      this.color = colors.color;
      this.bgcolor = colors.bgcolor;
    }

    onConfigure(info: any): void {
      this.savedWidgets = info.widgets_values;
    }

    onSerialize(o: any): void {
      if (this.savedWidgets !== undefined) o.widgets_values = this.savedWidgets;
      // Our colours mark the placeholder; they are not the user's.
      if (o.color === colors.color) delete o.color;
      if (o.bgcolor === colors.bgcolor) delete o.bgcolor;
    }

    onDrawForeground(ctx: CanvasRenderingContext2D): void {
      ctx.save();
      ctx.fillStyle = kind === "missing" ? "#fbb" : "#aab4c4";
      ctx.font = "12px sans-serif";
      ctx.fillText(label, 10, this.size[1] - 22);
      ctx.fillText(type.length > 40 ? type.slice(0, 37) + "…" : type, 10, this.size[1] - 8);
      ctx.restore();
    }
  }
  Object.defineProperty(Placeholder, "name", { value: kind === "missing" ? "Missing" : "Kept" });
  LiteGraph.registerNodeType(type, Placeholder);
}

// -- nodes that exist only in the editor ------------------------------------------------------

/** Editor-only nodes: notes and the classic reroute node (the server skips or follows them). */
export const EDITOR_ONLY_DEFS: NodeDef[] = [
  { name: "Note", display_name: "Note", category: "utils", input: {}, output: [], description: "A text note" },
  { name: "MarkdownNote", display_name: "Markdown Note", category: "utils", input: {}, output: [], description: "A note (Markdown text)" },
  { name: "Reroute", display_name: "Reroute", category: "utils", input: { required: { "": ["*"] } }, output: ["*"], description: "Passes a link through" },
];

export function registerEditorOnlyTypes(): void {
  for (const type of ["Note", "MarkdownNote"]) {
    class NoteNode extends LGraphNode {
      static title = type === "Note" ? "Note" : "Markdown Note";
      static loomEditorOnly = true;
      declare loom: NodeRunState;
      serialize_widgets = true;
      constructor(title?: string) {
        super(title ?? NoteNode.title);
        addRunStateDrawing(this as unknown as LoomNode);
        (this as any).expandToFitContent = () => {};
        this.addCustomWidget(multilineTextWidget("text", "", "Write a note…"));
        delete (this as any).expandToFitContent;
        this.size = [320, 160];
        this.color = "#575430";
        this.bgcolor = "#3b3a25";
      }
    }
    Object.defineProperty(NoteNode, "name", { value: type });
    LiteGraph.registerNodeType(type, NoteNode);
    (NoteNode as any).category = "utils";
  }
  class RerouteNode extends LGraphNode {
    static title = "Reroute";
    static loomEditorOnly = true;
    declare loom: NodeRunState;
    constructor(title?: string) {
      super(title ?? "Reroute");
      addRunStateDrawing(this as unknown as LoomNode);
      this.addInput("", "*");
      this.addOutput("", "*");
      this.size = [75, 26];
      (this as any).collapsable = false;
    }
  }
  Object.defineProperty(RerouteNode, "name", { value: "Reroute" });
  LiteGraph.registerNodeType("Reroute", RerouteNode);
  (RerouteNode as any).category = "utils";
}

export function isMissingNode(node: LGraphNode): boolean {
  return Boolean((node.constructor as any).loomMissing);
}

/** Registers placeholders for the node types a workflow uses that the server lacks. */
export function ensureTypesFor(workflow: any): string[] {
  const missing = new Set<string>();
  const visit = (nodes: any) => {
    if (!Array.isArray(nodes)) return;
    for (const n of nodes) {
      const type = n && typeof n.type === "string" ? n.type : null;
      if (type && !LiteGraph.registered_node_types[type]) missing.add(type);
    }
  };
  visit(workflow?.nodes);
  const subgraphs = new Set<string>();
  for (const sub of workflow?.definitions?.subgraphs ?? []) {
    visit(sub?.nodes);
    if (typeof sub?.id === "string") subgraphs.add(sub.id);
  }
  const reallyMissing: string[] = [];
  for (const type of missing) {
    if (type === "PrimitiveNode") registerPlaceholder(type, "kept", "Primitive (kept as saved)");
    else if (subgraphs.has(type)) registerPlaceholder(type, "kept", "Subgraph (kept as saved)");
    else {
      registerPlaceholder(type, "missing", "Missing node type:");
      reallyMissing.push(type);
    }
  }
  return reallyMissing;
}

/** Refreshes every combo's choices (model lists, input images) from a new /object_info. */
export function refreshCombos(graphs: LGraph[], info: ObjectInfo): void {
  for (const graph of graphs) {
    for (const node of graph._nodes) {
      const def = info[node.type ?? ""];
      if (!def) continue;
      for (const [name, spec] of orderedInputs(def)) {
        if (widgetKind(spec) !== "COMBO") continue;
        const widget: any = node.widgets?.find((w) => w.name === name);
        if (widget) widget.options.values = comboValues(spec);
      }
    }
    graph.setDirtyCanvas(true, true);
  }
}

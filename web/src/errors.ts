// Errors where they happened: validation errors mark the node and the offending inputs with the
// server's message; execution errors show the message and a collapsible traceback in a box
// pinned to the node (it follows the canvas as you pan and zoom).

import type { LGraph, LGraphCanvas, LGraphNode } from "@comfyorg/litegraph";
import type { ApiError, NodeErrorEntry } from "./api";
import type { LoomNode } from "./node_types";
import { el, toast } from "./ui";
import { nodeById } from "./workflows";

interface Bubble {
  node: LoomNode;
  box: HTMLElement;
}

const bubbles = new Map<LGraphNode, Bubble>();

export function clearErrors(graph: LGraph): void {
  for (const node of graph._nodes as LoomNode[]) {
    if (node.loom?.error) node.loom.error = undefined;
    for (const input of node.inputs ?? []) (input as any).hasErrors = false;
  }
  for (const [node, b] of bubbles) {
    if (node.graph === graph || !node.graph) {
      b.box.remove();
      bubbles.delete(node);
    }
  }
  graph.setDirtyCanvas(true, true);
}

function describeNode(node: LGraphNode): string {
  return `${node.title} (#${node.id})`;
}

/** A refused prompt: marks every node the server named; returns a one-line summary. */
export function showPromptError(graph: LGraph, err: ApiError): string {
  clearErrors(graph);
  const nodeErrors: Record<string, NodeErrorEntry> = err.nodeErrors;
  const lines: string[] = [];
  for (const [id, entry] of Object.entries(nodeErrors)) {
    const node = nodeById(graph, id) as LoomNode | undefined;
    const messages = entry.errors.map((e) => e.message);
    if (!node) {
      lines.push(`node ${id}: ${messages.join("; ")}`);
      continue;
    }
    const inputs: Record<string, string> = {};
    for (const e of entry.errors) {
      const name = e.extra_info?.input_name ?? e.details;
      if (typeof name === "string" && name) {
        inputs[name] = e.message;
        const slot = node.inputs?.find((i) => i.name === name || (i as any).widget?.name === name);
        if (slot) (slot as any).hasErrors = true;
      }
    }
    node.loom.error = { message: messages.join("\n"), inputs };
    showBubble(node, messages.join("\n"));
    lines.push(`${describeNode(node)}: ${messages.join("; ")}`);
  }
  const body = err.body?.error;
  const summary = lines.length
    ? lines.join("\n")
    : [body?.message ?? err.message, body?.details].filter(Boolean).join(": ");
  graph.setDirtyCanvas(true, true);
  toast(summary || err.message, "error", 10000);
  return summary;
}

/** An execution_error event: the failing node shows message and traceback. */
export function showExecutionError(graph: LGraph, data: any): void {
  const node = nodeById(graph, data.node_id) as LoomNode | undefined;
  const message = `${data.exception_type ?? "Error"}: ${data.exception_message ?? ""}`.trim();
  const traceback: string[] = Array.isArray(data.traceback) ? data.traceback : [];
  if (node) {
    node.loom.error = { message, inputs: {}, traceback };
    showBubble(node, message, traceback);
    graph.setDirtyCanvas(true, true);
  }
  toast(`${node ? describeNode(node) : `node ${data.node_id}`} failed: ${message}`, "error", 10000);
}

function showBubble(node: LoomNode, message: string, traceback: string[] = []): void {
  bubbles.get(node)?.box.remove();
  const box = el("div", { class: "error-bubble", "data-testid": "node-error", dataset: { nodeId: String(node.id) } },
    el("button", { type: "button", class: "close", title: "Dismiss", onclick: () => {
      box.remove();
      bubbles.delete(node);
    } }, "×"),
    el("div", { class: "error-message" }, message),
    traceback.length
      ? el("details", { class: "traceback" }, el("summary", {}, "Traceback"), el("pre", {}, traceback.join("")))
      : null);
  document.getElementById("canvas-wrap")!.append(box);
  bubbles.set(node, { node, box });
}

/** Keeps the error boxes next to their nodes (called after each canvas draw). */
export function positionBubbles(canvas: LGraphCanvas): void {
  if (!bubbles.size) return;
  const { scale, offset } = canvas.ds;
  for (const [node, b] of bubbles) {
    const visible = node.graph === canvas.graph;
    b.box.hidden = !visible;
    if (!visible) continue;
    const x = (node.pos[0] + offset[0]) * scale;
    const y = (node.pos[1] + node.size[1] + offset[1]) * scale + 6;
    b.box.style.transform = `translate(${Math.round(x)}px, ${Math.round(y)}px)`;
    b.box.style.maxWidth = `${Math.max(220, node.size[0] * scale)}px`;
  }
}

/** Red marks on the widgets whose values the server refused (drawn over the node). */
export function drawInputErrors(node: LoomNode, ctx: CanvasRenderingContext2D): void {
  const inputs = node.loom?.error?.inputs;
  if (!inputs) return;
  ctx.save();
  ctx.strokeStyle = "#f44";
  ctx.lineWidth = 2;
  for (const w of node.widgets ?? []) {
    if (!(w.name in inputs)) continue;
    const h = ((w as any).computedHeight ?? 24) - 4;
    ctx.beginPath();
    ctx.roundRect(12, w.y, node.size[0] - 24, h, 8);
    ctx.stroke();
  }
  ctx.restore();
}

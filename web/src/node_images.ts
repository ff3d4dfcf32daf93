// Images drawn inside a node, below its widgets: the outputs of Save/Preview nodes, the live
// sampler preview, LoadImage's chosen picture. Loaded once as <img> elements and redrawn from
// them, so a big graph pays nothing for nodes without images.

import type { LGraphNode } from "@comfyorg/litegraph";
import type { LoomNode } from "./node_types";

export interface NodeImages {
  urls: string[];
  imgs: HTMLImageElement[];
  /** A live preview (blob URL) rather than a saved result. */
  preview?: boolean;
}

const IMAGE_AREA = 220;

export function setNodeImages(node: LGraphNode, urls: string[], preview = false): void {
  const loom = (node as LoomNode).loom;
  if (!loom) return;
  const old = loom.images;
  if (old?.preview) for (const u of old.urls) if (!urls.includes(u)) URL.revokeObjectURL(u);
  const imgs = urls.map((url) => {
    const img = new Image();
    img.onload = () => node.setDirtyCanvas(true, false);
    img.src = url;
    return img;
  });
  loom.images = { urls, imgs, preview };
  const needed = widgetsBottom(node) + IMAGE_AREA;
  if (node.size[1] < needed) node.setSize([node.size[0], needed]);
  node.setDirtyCanvas(true, false);
}

export function clearNodeImages(node: LGraphNode): void {
  const loom = (node as LoomNode).loom;
  if (!loom?.images) return;
  if (loom.images.preview) for (const u of loom.images.urls) URL.revokeObjectURL(u);
  loom.images = undefined;
  node.setDirtyCanvas(true, false);
}

function widgetsBottom(node: LGraphNode): number {
  let bottom = 0;
  for (const w of node.widgets ?? []) {
    const h = (w as any).computedHeight ?? 24;
    bottom = Math.max(bottom, (w.y ?? 0) + h);
  }
  const slots = Math.max(node.inputs?.filter((i: any) => !i.widget).length ?? 0, node.outputs?.length ?? 0);
  return Math.max(bottom, slots * 20 + 10);
}

/** The image under a point of the node (node coordinates), for double-click to enlarge. */
export function imageAt(node: LGraphNode, x: number, y: number): string | null {
  const images = (node as LoomNode).loom?.images;
  if (!images?.urls.length || images.preview) return null;
  const top = widgetsBottom(node) + 4;
  if (y < top || x < 0 || x > node.size[0]) return null;
  const n = images.urls.length;
  const cols = Math.ceil(Math.sqrt(n));
  const rows = Math.ceil(n / cols);
  const col = Math.min(cols - 1, Math.floor(((x - 6) / (node.size[0] - 12)) * cols));
  const row = Math.min(rows - 1, Math.floor(((y - top) / (node.size[1] - top - 6)) * rows));
  return images.urls[row * cols + col] ?? null;
}

export function drawNodeImages(node: LoomNode, ctx: CanvasRenderingContext2D): void {
  const images = node.loom?.images;
  if (!images || !images.imgs.length || node.flags?.collapsed) return;
  const top = widgetsBottom(node) + 4;
  const w = node.size[0] - 12;
  const h = node.size[1] - top - 6;
  if (w < 10 || h < 10) return;
  const imgs = images.imgs.filter((i) => i.complete && i.naturalWidth);
  if (!imgs.length) return;
  // A grid that fits every image of the batch.
  const n = imgs.length;
  const cols = Math.ceil(Math.sqrt(n));
  const rows = Math.ceil(n / cols);
  const cw = w / cols;
  const ch = h / rows;
  imgs.forEach((img, i) => {
    const scale = Math.min(cw / img.naturalWidth, ch / img.naturalHeight);
    const iw = img.naturalWidth * scale;
    const ih = img.naturalHeight * scale;
    const x = 6 + (i % cols) * cw + (cw - iw) / 2;
    const y = top + Math.floor(i / cols) * ch + (ch - ih) / 2;
    ctx.drawImage(img, x, y, iw, ih);
  });
  if (images.preview) {
    ctx.save();
    ctx.fillStyle = "rgba(0,0,0,0.55)";
    ctx.fillRect(6, top, 58, 16);
    ctx.fillStyle = "#fff";
    ctx.font = "11px sans-serif";
    ctx.fillText("preview", 12, top + 12);
    ctx.restore();
  }
}

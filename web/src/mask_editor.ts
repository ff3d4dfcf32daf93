// The mask editor, opened from a LoadImage node: paint or erase a mask over the picture with an
// adjustable brush, undo, clear, zoom; Save uploads it with /upload/mask (the server writes the
// original with the mask as its alpha, ComfyUI's convention: transparent = masked) and points
// the node at the result, whose MASK output is then the painted area.

import type { LGraphNode } from "@comfyorg/litegraph";
import { api, type ImageRef } from "./api";
import type { App } from "./app";
import { imageInputName, inputImageUrl, showInputPreview } from "./image_upload";
import { dialog, el, toast } from "./ui";

const MAX_UNDO = 30;
const MASK_COLOR = "#ff3366"; // only the alpha is saved; the colour is for the eye

export function initMaskEditor(_app: App): void {}

function refOf(value: string): ImageRef {
  const slash = value.lastIndexOf("/");
  return { filename: value.slice(slash + 1), subfolder: slash >= 0 ? value.slice(0, slash) : "", type: "input" };
}

function loadImage(url: string): Promise<HTMLImageElement> {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`could not load ${url}`));
    img.src = url;
  });
}

export async function openMaskEditor(app: App, node: LGraphNode): Promise<void> {
  const inputName = imageInputName(app, node);
  const widget = node.widgets?.find((w) => w.name === inputName);
  const value = typeof widget?.value === "string" ? widget.value : "";
  if (!widget || !value) {
    toast("Choose or upload an image on the node first", "error");
    return;
  }
  let image: HTMLImageElement;
  try {
    image = await loadImage(inputImageUrl(value) + `&t=${Date.now()}`);
  } catch (e) {
    toast((e as Error).message, "error");
    return;
  }
  const w = image.naturalWidth;
  const h = image.naturalHeight;

  const picture = el("canvas", { width: w, height: h, class: "mask-picture" }) as HTMLCanvasElement;
  const mask = el("canvas", { width: w, height: h, class: "mask-layer", "data-testid": "mask-canvas" }) as HTMLCanvasElement;
  const pctx = picture.getContext("2d")!;
  const mctx = mask.getContext("2d", { willReadFrequently: true })!;
  pctx.drawImage(image, 0, 0);
  // An image that already has transparency (a mask saved before) starts with that mask.
  const pixels = pctx.getImageData(0, 0, w, h);
  const existing = mctx.createImageData(w, h);
  let hasMask = false;
  for (let i = 3; i < pixels.data.length; i += 4) {
    const masked = 255 - pixels.data[i];
    if (masked) hasMask = true;
    existing.data[i - 3] = 255;
    existing.data[i - 2] = 51;
    existing.data[i - 1] = 102;
    existing.data[i] = masked;
    pixels.data[i] = 255;
  }
  pctx.putImageData(pixels, 0, 0);
  if (hasMask) mctx.putImageData(existing, 0, 0);

  const stage = el("div", { class: "mask-stage" }, picture, mask);
  const viewport = el("div", { class: "mask-viewport" }, stage);
  let zoom = Math.min(1, 760 / w, 520 / h);
  const applyZoom = () => {
    stage.style.width = `${w * zoom}px`;
    stage.style.height = `${h * zoom}px`;
    zoomLabel.textContent = `${Math.round(zoom * 100)}%`;
  };

  let mode: "paint" | "erase" = "paint";
  const size = el("input", { type: "range", min: 1, max: 200, value: Math.max(4, Math.round(Math.min(w, h) / 12)), "data-testid": "mask-brush" }) as HTMLInputElement;
  const sizeLabel = el("span", { class: "muted" });
  const zoomLabel = el("span", { class: "muted" });
  const paintBtn = el("button", { type: "button", class: "active", "data-testid": "mask-paint", onclick: () => setMode("paint") }, "Paint");
  const eraseBtn = el("button", { type: "button", "data-testid": "mask-erase", onclick: () => setMode("erase") }, "Erase");
  const setMode = (m: typeof mode) => {
    mode = m;
    paintBtn.classList.toggle("active", m === "paint");
    eraseBtn.classList.toggle("active", m === "erase");
  };
  const undoStack: ImageData[] = [];
  const pushUndo = () => {
    undoStack.push(mctx.getImageData(0, 0, w, h));
    if (undoStack.length > MAX_UNDO) undoStack.shift();
  };
  const undo = () => {
    const prev = undoStack.pop();
    if (prev) mctx.putImageData(prev, 0, 0);
  };
  const clear = () => {
    pushUndo();
    mctx.clearRect(0, 0, w, h);
  };
  size.addEventListener("input", () => (sizeLabel.textContent = `${size.value} px`));
  sizeLabel.textContent = `${size.value} px`;

  // Painting: a round brush along the pointer's path, in image pixels.
  let last: [number, number] | null = null;
  const toImage = (e: PointerEvent): [number, number] => {
    const r = mask.getBoundingClientRect();
    return [((e.clientX - r.left) * w) / r.width, ((e.clientY - r.top) * h) / r.height];
  };
  const stroke = (from: [number, number], to: [number, number]) => {
    mctx.save();
    mctx.globalCompositeOperation = mode === "erase" ? "destination-out" : "source-over";
    mctx.strokeStyle = MASK_COLOR;
    mctx.fillStyle = MASK_COLOR;
    mctx.lineWidth = Number(size.value);
    mctx.lineCap = "round";
    mctx.lineJoin = "round";
    mctx.beginPath();
    mctx.moveTo(from[0], from[1]);
    mctx.lineTo(to[0], to[1]);
    mctx.stroke();
    mctx.beginPath();
    mctx.arc(to[0], to[1], Number(size.value) / 2, 0, Math.PI * 2);
    mctx.fill();
    mctx.restore();
  };
  mask.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    mask.setPointerCapture(e.pointerId);
    pushUndo();
    last = toImage(e);
    stroke(last, last);
  });
  mask.addEventListener("pointermove", (e) => {
    if (!last) return;
    const p = toImage(e);
    stroke(last, p);
    last = p;
  });
  const end = () => (last = null);
  mask.addEventListener("pointerup", end);
  mask.addEventListener("pointercancel", end);
  viewport.addEventListener("wheel", (e) => {
    if (!e.ctrlKey && !e.altKey) return;
    e.preventDefault();
    zoom = Math.min(8, Math.max(0.1, zoom * (e.deltaY < 0 ? 1.15 : 1 / 1.15)));
    applyZoom();
  }, { passive: false });

  const save = async () => {
    // The uploaded mask: opaque where unpainted, transparent where painted.
    const out = el("canvas", { width: w, height: h }) as HTMLCanvasElement;
    const octx = out.getContext("2d")!;
    octx.fillStyle = "#000";
    octx.fillRect(0, 0, w, h);
    octx.globalCompositeOperation = "destination-out";
    octx.drawImage(mask, 0, 0);
    const blob = await new Promise<Blob | null>((r) => out.toBlob(r, "image/png"));
    if (!blob) return;
    const base = refOf(value).filename.replace(/\.[^.]+$/, "").replace(/^mask-\d+-/, "");
    try {
      const res = await api.uploadMask(blob, `mask-${Date.now()}-${base}.png`, refOf(value));
      const newValue = res.subfolder ? `${res.subfolder}/${res.name}` : res.name;
      await app.refreshNodeDefs();
      widget.value = newValue;
      showInputPreview(node, newValue);
      app.tabs.checkChanges();
      d.close();
      toast(`Mask saved: ${newValue}`, "ok");
    } catch (e) {
      toast(`Saving the mask failed: ${(e as Error).message}`, "error", 8000);
    }
  };

  const tools = el("div", { class: "mask-tools" },
    paintBtn, eraseBtn,
    el("label", {}, "Brush ", size), sizeLabel,
    el("button", { type: "button", "data-testid": "mask-undo", onclick: undo, title: "Undo (Ctrl+Z)" }, "Undo"),
    el("button", { type: "button", "data-testid": "mask-clear", onclick: clear }, "Clear"),
    el("button", { type: "button", title: "Zoom out (Ctrl+wheel)", onclick: () => { zoom = Math.max(0.1, zoom / 1.25); applyZoom(); } }, "−"),
    zoomLabel,
    el("button", { type: "button", title: "Zoom in (Ctrl+wheel)", onclick: () => { zoom = Math.min(8, zoom * 1.25); applyZoom(); } }, "+"),
    el("span", { class: "spacer" }),
    el("button", { type: "button", class: "primary", "data-testid": "mask-save", onclick: save }, "Save"));
  const d = dialog(`Mask editor — ${value}`, el("div", { class: "mask-editor" }, tools, viewport), { wide: true, testid: "mask-editor" });
  const onKey = (e: KeyboardEvent) => {
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") {
      e.preventDefault();
      e.stopPropagation();
      undo();
    }
  };
  document.addEventListener("keydown", onKey, true);
  d.closed.then(() => document.removeEventListener("keydown", onKey, true));
  applyZoom();
}

// Widgets for node inputs, built from their /object_info declarations: numbers and sliders with
// step/min/max, one-line and multiline text, toggles, combos, the seed's "control after
// generate", and LoadImage's upload button.

import { LGraphCanvas, type LGraphNode, type IWidget } from "@comfyorg/litegraph";
import type { InputSpec } from "./api";

export const WIDGET_TYPES = new Set(["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"]);
export const CONTROL_VALUES = ["fixed", "increment", "decrement", "randomize"];
export const SEED_NAMES = new Set(["seed", "noise_seed"]);
export const CONTROL_WIDGET = "control_after_generate";
// Seeds are randomised within the range JavaScript numbers hold exactly.
const MAX_RANDOM_SEED = 2 ** 50;

/** The widget kind an input gets, or null when it is a socket only. */
export function widgetKind(spec: InputSpec): string | null {
  const [type, opts = {}] = spec;
  if (opts.forceInput) return null;
  if (Array.isArray(type)) return "COMBO";
  return WIDGET_TYPES.has(type) ? type : null;
}

export function comboValues(spec: InputSpec): string[] {
  const [type, opts = {}] = spec;
  if (Array.isArray(type)) return type.map(String);
  return Array.isArray(opts.options) ? opts.options.map(String) : [];
}

function decimals(step: number): number {
  const s = String(step);
  const dot = s.indexOf(".");
  return dot < 0 ? 0 : Math.min(s.length - dot - 1, 6);
}

/** Adds the widget(s) for one input; returns the main widget. */
export function addInputWidget(node: LGraphNode, name: string, spec: InputSpec): IWidget {
  const kind = widgetKind(spec)!;
  const opts = spec[1] ?? {};
  const onChange = () => node.setDirtyCanvas(true, false);
  let widget: any;
  switch (kind) {
    case "INT":
    case "FLOAT": {
      const isInt = kind === "INT";
      const step = Number(opts.step ?? (isInt ? 1 : 0.01)) || (isInt ? 1 : 0.01);
      const round = typeof opts.round === "number" && opts.round > 0 ? opts.round : step;
      const options: any = {
        min: opts.min ?? (isInt ? -(2 ** 53) : -Infinity),
        max: opts.max ?? (isInt ? 2 ** 53 : Infinity),
        step2: step,
        step: step * 10, // litegraph's legacy step is ten times the real one
        precision: isInt ? 0 : decimals(round),
        round: isInt ? 1 : round,
      };
      const type = opts.display === "slider" && Number.isFinite(options.min) && Number.isFinite(options.max)
        ? "slider" : "number";
      const value = opts.default ?? (Number.isFinite(options.min) ? options.min : 0);
      widget = node.addWidget(type, name, value, (v: number) => {
        let n = Number(v);
        if (isInt) n = Math.round(n);
        else if (round) n = Math.round(n / round) * round;
        widget.value = Number(n.toFixed(options.precision));
        onChange();
      }, options);
      break;
    }
    case "BOOLEAN":
      widget = node.addWidget("toggle", name, Boolean(opts.default ?? false), onChange, {
        on: opts.label_on ?? "true",
        off: opts.label_off ?? "false",
      });
      break;
    case "COMBO": {
      const values = comboValues(spec);
      const value = opts.default ?? values[0] ?? "";
      widget = node.addWidget("combo", name, value, onChange, { values });
      break;
    }
    case "STRING":
      if (opts.multiline) {
        widget = node.addCustomWidget(multilineTextWidget(name, String(opts.default ?? ""), opts.placeholder));
      } else {
        widget = node.addWidget("text", name, String(opts.default ?? ""), onChange, {});
      }
      break;
  }
  if (opts.tooltip) widget.tooltip = opts.tooltip;
  // The seed's "control after generate": what the seed does after each queue.
  if (kind === "INT" && (opts.control_after_generate || SEED_NAMES.has(name))) {
    const control = node.addWidget("combo", CONTROL_WIDGET, "randomize", onChange, { values: CONTROL_VALUES });
    (control as any).linkedTo = name;
    control.tooltip = "What the seed does after each queue";
  }
  return widget;
}

/** After a prompt was queued: step, randomise or keep each seed, as its control says. */
export function applyControlsAfterQueue(node: LGraphNode): void {
  const widgets = node.widgets ?? [];
  for (let i = 0; i < widgets.length; i++) {
    const control: any = widgets[i];
    if (control.name !== CONTROL_WIDGET || !control.linkedTo) continue;
    const target: any = widgets.find((w) => w.name === control.linkedTo);
    if (!target || node.getSlotFromWidget?.(target)?.link != null) continue;
    const { min = 0, max = MAX_RANDOM_SEED } = target.options ?? {};
    const step = target.options?.step2 ?? 1;
    let v = Number(target.value);
    switch (control.value) {
      case "increment":
        v += step;
        break;
      case "decrement":
        v -= step;
        break;
      case "randomize": {
        const hi = Math.min(max, MAX_RANDOM_SEED);
        const lo = Math.max(min, 0);
        v = lo + Math.floor(Math.random() * (hi - lo + 1));
        break;
      }
      default:
        continue;
    }
    target.value = Math.min(max, Math.max(min, v));
  }
  node.setDirtyCanvas(true, false);
}

// -- multiline text: drawn on the canvas, edited in a textarea laid over it ------------------

const LINE_HEIGHT = 14;

// Read once per theme (getComputedStyle in a draw call would run for every widget each frame).
let cachedColors: { theme: string; bg: string; text: string } | null = null;
function themeColors(): { bg: string; text: string } {
  const theme = document.documentElement.dataset.theme ?? "";
  if (cachedColors?.theme !== theme) {
    const style = getComputedStyle(document.documentElement);
    cachedColors = {
      theme,
      bg: style.getPropertyValue("--widget-bg").trim() || "#222",
      text: style.getPropertyValue("--widget-text").trim() || "#ddd",
    };
  }
  return cachedColors;
}

export function multilineTextWidget(name: string, value: string, placeholder?: string): any {
  const widget: any = {
    type: "loom_multiline",
    name,
    value,
    options: { multiline: true },
    y: 0,
    placeholder: placeholder ?? name,
    computeLayoutSize() {
      return { minHeight: 64, minWidth: 200 };
    },
    draw(ctx: CanvasRenderingContext2D, node: LGraphNode, width: number, y: number, _h: number, lowQuality = false) {
      const h = (widget.computedHeight ?? 64) - 4;
      const m = 10;
      const colors = themeColors();
      ctx.save();
      ctx.fillStyle = colors.bg;
      ctx.strokeStyle = "rgba(128,128,128,0.4)";
      ctx.beginPath();
      ctx.roundRect(m, y, width - m * 2, h, 6);
      ctx.fill();
      if (lowQuality) {
        ctx.restore(); // zoomed far out: the box is enough
        return;
      }
      ctx.stroke();
      const disabled = node.getSlotFromWidget?.(widget)?.link != null;
      ctx.globalAlpha *= disabled ? 0.4 : 1;
      ctx.beginPath();
      ctx.rect(m, y, width - m * 2, h);
      ctx.clip();
      ctx.font = "12px sans-serif";
      ctx.fillStyle = widget.value ? colors.text : "#888";
      const text = disabled ? `${name} (from input)` : String(widget.value || widget.placeholder);
      // Wrapping measures every word: keep the lines until the text or the width change.
      const key = `${width}\n${text}`;
      if (widget._wrapKey !== key) {
        widget._wrapKey = key;
        widget._lines = text.split("\n").flatMap((para) => wrapText(ctx, para, width - m * 2 - 12));
      }
      const lines: string[] = widget._lines;
      for (let i = 0; i < lines.length; i++) {
        const ty = y + 14 + i * LINE_HEIGHT;
        if (ty > y + h) break;
        ctx.fillText(lines[i], m + 6, ty);
      }
      ctx.restore();
    },
    mouse(event: PointerEvent, pos: [number, number], node: LGraphNode) {
      if (event.type === "pointerdown") {
        if (node.getSlotFromWidget?.(widget)?.link != null) return false;
        openTextEditor(node, widget);
        return true;
      }
      return false;
    },
  };
  return widget;
}

function wrapText(ctx: CanvasRenderingContext2D, text: string, width: number): string[] {
  if (ctx.measureText(text).width <= width) return [text];
  const out: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    const next = line ? line + " " + word : word;
    if (ctx.measureText(next).width > width && line) {
      out.push(line);
      line = word;
    } else line = next;
  }
  if (line) out.push(line);
  return out;
}

let openEditor: HTMLTextAreaElement | null = null;

/** A textarea over the widget, in screen space; typing updates the value at once. */
export function openTextEditor(node: LGraphNode, widget: any): void {
  openEditor?.blur();
  const canvas = LGraphCanvas.active_canvas;
  if (!canvas) return;
  const rect = canvas.canvas.getBoundingClientRect();
  const scale = canvas.ds.scale;
  const [ox, oy] = canvas.ds.offset;
  const m = 10;
  const x = rect.left + (node.pos[0] + m + ox) * scale;
  const y = rect.top + (node.pos[1] + widget.y + oy) * scale;
  const area = document.createElement("textarea");
  area.className = "loom-textarea";
  area.dataset.widget = widget.name;
  area.dataset.node = String(node.id);
  area.value = String(widget.value ?? "");
  Object.assign(area.style, {
    left: `${x}px`,
    top: `${y}px`,
    width: `${(node.size[0] - m * 2) * scale}px`,
    height: `${((widget.computedHeight ?? 64) - 4) * scale}px`,
    fontSize: `${12 * scale}px`,
  });
  area.addEventListener("input", () => {
    widget.value = area.value;
    node.graph?.change();
  });
  area.addEventListener("keydown", (e) => {
    e.stopPropagation(); // canvas shortcuts (Delete, Ctrl+A...) must not fire while typing
    if (e.key === "Escape") area.blur();
  });
  area.addEventListener("blur", () => {
    area.remove();
    if (openEditor === area) openEditor = null;
    node.setDirtyCanvas(true, true);
    document.dispatchEvent(new CustomEvent("loom:graph-edited"));
  });
  document.body.append(area);
  openEditor = area;
  area.focus();
}

export function closeTextEditor(): void {
  openEditor?.blur();
}

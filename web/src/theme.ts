// Dark and light themes: CSS variables for the page, litegraph's colour constants for the
// canvas. The choice is remembered per browser.

import { LGraphCanvas, LiteGraph } from "@comfyorg/litegraph";

export type Theme = "dark" | "light";

const CANVAS = {
  dark: {
    background: "#1b1d22",
    node: { title: "#30343c", body: "#24272d", text: "#d8dadf", titleText: "#e8e9ec", outline: "#555b66" },
    widget: { bg: "#1a1c20", outline: "#3c414a", text: "#d8dadf", secondary: "#9aa0aa" },
    link: "#9aa4b4",
  },
  light: {
    background: "#eef0f3",
    node: { title: "#d9dde4", body: "#fbfbfc", text: "#22252b", titleText: "#1c1f24", outline: "#98a0ad" },
    widget: { bg: "#eceef2", outline: "#c4c9d2", text: "#1f2227", secondary: "#5a616d" },
    link: "#6c7686",
  },
};

export function currentTheme(): Theme {
  return document.documentElement.dataset.theme === "light" ? "light" : "dark";
}

export function applyTheme(theme: Theme, canvas?: LGraphCanvas): void {
  document.documentElement.dataset.theme = theme;
  localStorage.setItem("loom.theme", theme);
  const c = CANVAS[theme];
  const L = LiteGraph as any;
  L.NODE_DEFAULT_COLOR = c.node.title;
  L.NODE_DEFAULT_BGCOLOR = c.node.body;
  L.NODE_TEXT_COLOR = c.node.text;
  L.NODE_TITLE_COLOR = c.node.titleText;
  L.NODE_SELECTED_TITLE_COLOR = theme === "dark" ? "#fff" : "#000";
  L.NODE_DEFAULT_BOXCOLOR = c.node.outline;
  L.NODE_BOX_OUTLINE_COLOR = theme === "dark" ? "#fff" : "#333";
  L.WIDGET_BGCOLOR = c.widget.bg;
  L.WIDGET_OUTLINE_COLOR = c.widget.outline;
  L.WIDGET_TEXT_COLOR = c.widget.text;
  L.WIDGET_SECONDARY_TEXT_COLOR = c.widget.secondary;
  L.LINK_COLOR = c.link;
  if (canvas) {
    canvas.clear_background_color = c.background;
    canvas.background_image = "";
    canvas.node_title_color = c.node.titleText;
    (canvas as any).default_link_color = c.link;
    canvas.setDirty(true, true);
  }
}

export function initialTheme(): Theme {
  const saved = localStorage.getItem("loom.theme");
  if (saved === "light" || saved === "dark") return saved;
  return window.matchMedia?.("(prefers-color-scheme: light)").matches ? "light" : "dark";
}

/** Socket colours by type, so links read at a glance. */
export const TYPE_COLORS: Record<string, string> = {
  MODEL: "#b39ddb",
  CLIP: "#ffd54f",
  VAE: "#ef5350",
  CONDITIONING: "#ffa726",
  LATENT: "#f48fb1",
  IMAGE: "#64b5f6",
  MASK: "#81c784",
  CONTROL_NET: "#4db6ac",
  UPSCALE_MODEL: "#a1887f",
  INT: "#aed581",
  FLOAT: "#aed581",
  STRING: "#90a4ae",
  COMBO: "#90a4ae",
  BOOLEAN: "#aed581",
};

export function applyTypeColors(canvas: LGraphCanvas): void {
  const colors = (canvas as any).default_connection_color_byType ?? {};
  Object.assign(colors, TYPE_COLORS);
  (canvas as any).default_connection_color_byType = colors;
  (LGraphCanvas as any).link_type_colors = { ...((LGraphCanvas as any).link_type_colors ?? {}), ...TYPE_COLORS };
}

// The history panel: finished prompts, newest first, with their images (persisted by the
// server, so it survives restarts). Click an image for full size; drag it onto the canvas to
// reopen the workflow that made it (the PNG carries it).

import { api, type ImageRef } from "./api";
import type { App } from "./app";
import { dialog, el } from "./ui";

export const DRAG_MIME = "application/x-loom-image";

export class Gallery {
  private root = document.getElementById("history-panel")!;
  private timer = 0;

  constructor(private app: App) {
    app.conn.on("execution_success", () => this.refreshSoon());
    app.conn.on("execution_error", () => this.refreshSoon());
    app.conn.on("execution_interrupted", () => this.refreshSoon());
    app.conn.on("connection", (s) => s === "open" && this.refreshSoon());
  }

  refreshSoon(): void {
    clearTimeout(this.timer);
    this.timer = window.setTimeout(() => this.refresh(), 150);
  }

  async refresh(): Promise<void> {
    let history: Record<string, any>;
    try {
      history = await api.history(100);
    } catch {
      return;
    }
    // The server lists oldest first; show newest first.
    const entries = Object.entries(history).reverse();
    const items = entries.map(([id, entry]) => {
      const images: ImageRef[] = [];
      for (const out of Object.values<any>(entry.outputs ?? {})) {
        for (const img of out?.images ?? []) if (img?.filename) images.push(img);
      }
      const status = entry.status?.status_str ?? (entry.status?.completed ? "success" : "");
      return el("li", { class: `history-item ${status}`, "data-testid": "history-item", dataset: { promptId: id } },
        el("div", { class: "h-head" }, el("span", { title: id }, id.slice(0, 8)), el("span", { class: `badge ${status}` }, status || "…")),
        el("div", { class: "thumbs" }, ...images.map((img) => this.thumb(img))));
    });
    this.root.replaceChildren(...[
      el("div", { class: "panel-head" }, el("span", {}, `${entries.length} finished`),
        el("button", { type: "button", class: "small", onclick: () => api.clearHistory().then(() => this.refresh()) }, "Clear")),
      el("ul", { class: "list" }, ...items),
      entries.length ? null : el("p", { class: "muted pad" }, "No results yet.")].filter((x) => x !== null) as HTMLElement[]);
  }

  private thumb(ref: ImageRef): HTMLElement {
    const url = api.viewUrl(ref);
    const img = el("img", { src: url, loading: "lazy", alt: ref.filename, draggable: true,
      "data-testid": "history-image", title: `${ref.filename} — click for full size, drag onto the canvas to load its workflow` });
    img.addEventListener("click", () => showFullSize(ref));
    img.addEventListener("dragstart", (e) => {
      e.dataTransfer?.setData(DRAG_MIME, JSON.stringify(ref));
      e.dataTransfer?.setData("text/uri-list", location.origin + url);
    });
    return img;
  }
}

export function showFullSize(ref: ImageRef | string): void {
  const url = typeof ref === "string" ? ref : api.viewUrl(ref);
  const name = typeof ref === "string" ? new URLSearchParams(ref.split("?")[1] ?? "").get("filename") ?? "image" : ref.filename;
  dialog(name, el("div", { class: "full-image" },
    el("img", { src: url, alt: name, "data-testid": "full-image" }),
    el("p", {}, el("a", { href: url, target: "_blank", rel: "noopener" }, "Open in a new tab"))), { wide: true, testid: "image-viewer" });
}

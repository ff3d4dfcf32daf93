// The queue panel: the running prompt (interrupt) and the pending ones (cancel, or clear all),
// refreshed whenever the server's status says the queue changed.

import { api } from "./api";
import type { App } from "./app";
import { el, toast } from "./ui";

export class QueuePanel {
  private root = document.getElementById("queue-panel")!;
  private timer = 0;

  constructor(private app: App) {
    app.conn.on("status", () => this.refreshSoon());
    app.conn.on("connection", (s) => s === "open" && this.refreshSoon());
    app.conn.on("execution_start", () => this.refreshSoon());
    document.addEventListener("loom:queued", () => this.refreshSoon());
    this.refresh();
  }

  refreshSoon(): void {
    clearTimeout(this.timer);
    this.timer = window.setTimeout(() => this.refresh(), 100);
  }

  async refresh(): Promise<void> {
    let q: { queue_running: any[]; queue_pending: any[] };
    try {
      q = await api.queue();
    } catch {
      return;
    }
    const pending = [...q.queue_pending].sort((a, b) => a[0] - b[0]);
    const item = (entry: any, running: boolean) => {
      const [number, id, prompt] = entry;
      const nodes = prompt && typeof prompt === "object" ? Object.keys(prompt).length : 0;
      return el("li", { class: `queue-item${running ? " running" : ""}`, "data-testid": running ? "queue-running" : "queue-pending",
        dataset: { promptId: id } },
        el("span", { class: "q-num" }, `#${number}`),
        el("span", { class: "q-id", title: id }, `${String(id).slice(0, 8)} · ${nodes} nodes`),
        running
          ? el("button", { type: "button", class: "small", "data-testid": "queue-interrupt", title: "Interrupt",
            onclick: () => api.interrupt().then(() => toast("Interrupting…")) }, "Stop")
          : el("button", { type: "button", class: "small", "data-testid": "queue-cancel", title: "Remove from queue",
            onclick: () => api.deleteFromQueue([id]).then(() => this.refresh()) }, "Cancel"));
    };
    this.root.replaceChildren(...[
      el("div", { class: "panel-head" },
        el("span", {}, `Running ${q.queue_running.length} · pending ${pending.length}`),
        el("button", { type: "button", class: "small", disabled: !pending.length, "data-testid": "queue-clear",
          onclick: () => api.clearQueue().then(() => this.refresh()) }, "Clear pending")),
      el("ul", { class: "list" }, ...q.queue_running.map((e) => item(e, true)), ...pending.map((e) => item(e, false))),
      !q.queue_running.length && !pending.length ? el("p", { class: "muted pad" }, "Nothing queued. Press Queue or Ctrl+Enter.") : null,
    ].filter((x) => x !== null) as HTMLElement[]);
  }
}

// Small DOM helpers shared by the panels: element building, toasts, dialogs, dropdown menus.

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Record<string, any> = {},
  ...children: (Node | string | null | undefined | false)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "style" && typeof v === "object") Object.assign(node.style, v);
    else if (k in node && typeof v !== "string") (node as any)[k] = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
}

export function toast(message: string, kind: "info" | "error" | "ok" = "info", ms = 4000): void {
  const box = document.getElementById("toasts");
  if (!box) return;
  const t = el("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  box.append(t);
  setTimeout(() => t.remove(), ms);
}

/** A modal dialog; resolves when closed. */
export function dialog(title: string, body: Node, { wide = false, testid = "" } = {}): {
  root: HTMLElement;
  close: () => void;
  closed: Promise<void>;
} {
  let resolve!: () => void;
  const closed = new Promise<void>((r) => (resolve = r));
  const close = () => {
    backdrop.remove();
    document.removeEventListener("keydown", onKey, true);
    resolve();
  };
  const onKey = (e: KeyboardEvent) => {
    if (e.key === "Escape") {
      e.stopPropagation();
      close();
    }
  };
  const root = el("div", { class: `dialog${wide ? " wide" : ""}`, role: "dialog", "aria-label": title, "data-testid": testid || null },
    el("div", { class: "dialog-head" }, el("h2", {}, title),
      el("button", { type: "button", class: "close", title: "Close (Esc)", onclick: close }, "×")),
    body);
  const backdrop = el("div", { class: "backdrop", onmousedown: (e: MouseEvent) => e.target === backdrop && close() }, root);
  document.body.append(backdrop);
  document.addEventListener("keydown", onKey, true);
  return { root, close, closed };
}

/** Asks for one line of text; null when cancelled. */
export function askText(title: string, value = "", label = ""): Promise<string | null> {
  return new Promise((resolve) => {
    let result: string | null = null;
    const input = el("input", { type: "text", value, "data-testid": "ask-input" }) as HTMLInputElement;
    const form = el("form", { class: "ask" }, label ? el("label", {}, label) : null, input,
      el("button", { type: "submit", class: "primary" }, "OK"));
    const d = dialog(title, form);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      result = input.value;
      d.close();
    });
    d.closed.then(() => resolve(result));
    setTimeout(() => input.select(), 0);
  });
}

export interface MenuItem {
  label: string;
  action?: () => void;
  testid?: string;
  disabled?: boolean;
  separator?: boolean;
  hint?: string;
}

/** A dropdown under an anchor element; items may be built lazily (async). */
export function dropdown(anchor: HTMLElement, items: MenuItem[] | (() => Promise<MenuItem[]> | MenuItem[])): void {
  closeDropdowns();
  const menu = el("div", { class: "dropdown", role: "menu" });
  const r = anchor.getBoundingClientRect();
  Object.assign(menu.style, { left: `${r.left}px`, top: `${r.bottom + 2}px` });
  document.body.append(menu);
  const fill = (list: MenuItem[]) => {
    menu.replaceChildren();
    for (const item of list) {
      if (item.separator) {
        menu.append(el("hr"));
        continue;
      }
      menu.append(el("button", {
        type: "button", role: "menuitem", disabled: item.disabled, "data-testid": item.testid || null,
        onclick: () => {
          closeDropdowns();
          item.action?.();
        },
      }, el("span", {}, item.label), item.hint ? el("kbd", {}, item.hint) : null));
    }
    if (!list.length) menu.append(el("div", { class: "muted pad" }, "(empty)"));
  };
  if (typeof items === "function") {
    menu.append(el("div", { class: "muted pad" }, "loading…"));
    Promise.resolve(items()).then(fill, (e) => fill([{ label: `failed: ${e.message}`, disabled: true }]));
  } else fill(items);
  setTimeout(() => document.addEventListener("mousedown", outside, true), 0);
  function outside(e: MouseEvent) {
    if (!menu.contains(e.target as Node)) closeDropdowns();
  }
  (menu as any)._cleanup = () => document.removeEventListener("mousedown", outside, true);
}

export function closeDropdowns(): void {
  for (const m of document.querySelectorAll(".dropdown")) {
    (m as any)._cleanup?.();
    m.remove();
  }
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const m = Math.floor(seconds / 60);
  return `${m} min ${Math.round(seconds - m * 60)} s`;
}

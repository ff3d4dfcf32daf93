// Loom's status page: server info, queue, history, and a box to queue a prompt or workflow.
// Plain DOM, no build step. Server data is only ever inserted as text (never as HTML).
"use strict";

const clientId = (crypto.randomUUID && crypto.randomUUID()) || String(Math.random()).slice(2);
const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const res = await fetch(path, init);
  let data = null;
  try { data = await res.json(); } catch (_) { /* empty or non-JSON body */ }
  return { ok: res.ok, status: res.status, data };
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function describeError(data, status) {
  if (!data || !data.error) return `HTTP ${status}`;
  const err = data.error;
  const lines = [[err.message, err.details].filter(Boolean).join(": ")];
  for (const [id, node] of Object.entries(data.node_errors || {})) {
    for (const e of node.errors || []) lines.push(`node ${id} (${node.class_type}): ${e.message}`);
  }
  return lines.join("\n");
}

async function refreshServer() {
  const { ok, data } = await api("/system_stats").catch(() => ({ ok: false }));
  if (!ok || !data) { $("server").textContent = "not reachable"; return; }
  const s = data.system || {};
  const devices = (data.devices || []).map((d) => d.name || d.type).filter(Boolean).join(", ");
  $("server").textContent = ["running", s.loom_version && `Loom ${s.loom_version}`,
    s.pytorch_version && `torch ${s.pytorch_version}`, devices].filter(Boolean).join(" · ");
}

async function refreshQueue() {
  const { ok, data } = await api("/queue").catch(() => ({ ok: false }));
  const list = $("queue-list");
  if (!ok || !data) return;
  const running = data.queue_running || [], pending = data.queue_pending || [];
  $("queue-count").textContent = `(${running.length} running, ${pending.length} pending)`;
  list.replaceChildren(...running.map((q) => el("li", `running · #${q[0]} · ${q[1]}`)),
    ...pending.map((q) => el("li", `pending · #${q[0]} · ${q[1]}`)));
  if (!running.length && !pending.length) list.replaceChildren(el("li", "empty", "muted"));
}

function viewUrl(img) {
  const q = new URLSearchParams({ filename: img.filename, subfolder: img.subfolder || "",
    type: img.type || "output" });
  return `/view?${q}`;
}

async function refreshHistory() {
  const { ok, data } = await api("/history?max_items=12").catch(() => ({ ok: false }));
  const list = $("history-list");
  if (!ok || !data) return;
  const items = Object.entries(data).reverse().map(([id, entry]) => {
    const li = el("li");
    const st = entry.status || {};
    const good = st.status_str === "success";
    li.append(el("span", good ? "✔ " : st.status_str ? "✘ " : "… ", good ? "ok" : "bad"),
      el("code", id), el("span", ` ${st.status_str || "running"}`, "muted"));
    const err = (st.messages || []).find((m) => m[0] === "execution_error");
    if (err) li.append(el("div", `${err[1].node_type || ""}: ${err[1].exception_message || ""}`, "bad"));
    const thumbs = el("div", undefined, "thumbs");
    for (const out of Object.values(entry.outputs || {})) {
      for (const img of out.images || []) {
        const a = el("a"); a.href = viewUrl(img); a.target = "_blank"; a.rel = "noopener";
        const i = el("img"); i.src = viewUrl(img); i.alt = img.filename; i.loading = "lazy";
        a.append(i); thumbs.append(a);
      }
    }
    if (thumbs.childElementCount) li.append(thumbs);
    return li;
  });
  list.replaceChildren(...(items.length ? items : [el("li", "nothing yet", "muted")]));
}

function refreshAll() { refreshServer(); refreshQueue(); refreshHistory(); }

function isWorkflow(data) { return Array.isArray(data.nodes) && Array.isArray(data.links); }

async function queue() {
  $("error").hidden = true;
  $("result").textContent = "";
  let data;
  try { data = JSON.parse($("json").value); } catch (e) {
    showError(`Not valid JSON: ${e.message}`); return;
  }
  if (!data || typeof data !== "object" || Array.isArray(data)) {
    showError("Expected a JSON object: an API prompt or a UI workflow"); return;
  }
  // A UI workflow goes as-is: the server converts it to a prompt. Like ComfyUI's editor, we
  // send it in extra_pnginfo too, so SaveImage embeds it in the PNGs.
  const body = isWorkflow(data)
    ? { workflow: data, client_id: clientId, extra_data: { extra_pnginfo: { workflow: data } } }
    : { prompt: data, client_id: clientId };
  const res = await api("/prompt", body).catch((e) => ({ ok: false, status: 0, data: { error: { message: String(e) } } }));
  if (!res.ok) { showError(describeError(res.data, res.status)); return; }
  $("result").textContent = `queued ${res.data.prompt_id} (#${res.data.number})`;
  refreshQueue();
}

function showError(text) { $("error").textContent = text; $("error").hidden = false; }

function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/ws?clientId=${encodeURIComponent(clientId)}`);
  let timer = null;
  ws.onmessage = () => { clearTimeout(timer); timer = setTimeout(refreshAll, 200); };
  ws.onclose = () => setTimeout(connect, 3000);
}

$("queue").addEventListener("click", queue);
$("interrupt").addEventListener("click", () => api("/interrupt", {}).then(refreshQueue));
$("file").addEventListener("change", async (ev) => {
  const f = ev.target.files[0];
  if (f) $("json").value = await f.text();
});
refreshAll();
connect();
setInterval(refreshAll, 10000);

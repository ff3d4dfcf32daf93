// Queueing and watching: the Queue button / Ctrl+Enter (with batch count), and the websocket
// events of a run drawn onto the graph that queued it: the running node outlined, per-node step
// progress, the overall bar with an ETA, live previews on the sampling node, output images on
// Save/Preview nodes, and errors on the failing node.

import type { LGraph } from "@comfyorg/litegraph";
import { api, ApiError, type ImageRef } from "./api";
import type { App } from "./app";
import { clearErrors, showExecutionError, showPromptError } from "./errors";
import { clearNodeImages, setNodeImages } from "./node_images";
import { isMissingNode, type LoomNode } from "./node_types";
import { applyControlsAfterQueue } from "./widgets";
import { formatDuration, toast } from "./ui";
import { nodeById } from "./workflows";

interface RunState {
  promptId: string;
  graph: LGraph;
  total: number;
  done: Set<string>;
  current: string | null;
  step: { value: number; max: number; startedAt: number } | null;
  startedAt: number;
}

export class Execution {
  run: RunState | null = null;
  /** The graph being queued: its execution_start may arrive before the HTTP answer. */
  private queueing: LGraph | null = null;
  private fill = document.getElementById("progress-fill") as HTMLElement;
  private text = document.getElementById("progress-text") as HTMLElement;

  constructor(private app: App) {
    const c = app.conn;
    c.on("execution_start", (d) => this.onStart(d));
    c.on("execution_cached", (d) => this.onCached(d));
    c.on("executing", (d) => this.onExecuting(d));
    c.on("progress", (d) => this.onProgress(d));
    c.on("progress_state", (d) => this.onProgressState(d));
    c.on("executed", (d) => this.onExecuted(d));
    c.on("execution_error", (d) => this.onError(d));
    c.on("execution_interrupted", (d) => this.onInterrupted(d));
    c.on("execution_success", (d) => this.finish(d?.prompt_id));
    c.on("preview", (blob: Blob) => this.onPreview(blob));
  }

  /** Queues the active workflow `count` times; seeds step/randomise after each, as set. */
  async queue(count = 1, front = false): Promise<boolean> {
    const { app } = this;
    const tab = app.tabs.active;
    for (let i = 0; i < count; i++) {
      const graph = tab.graph;
      clearErrors(graph);
      this.queueing = graph;
      try {
        const res = await api.queueWorkflow(app.tabs.serialize(tab), app.conn.clientId, front);
        app.promptGraphs.set(res.prompt_id, graph);
      } catch (e) {
        if (e instanceof ApiError) showPromptError(graph, e);
        else toast(`Could not queue: ${(e as Error).message}`, "error", 8000);
        return false;
      } finally {
        this.queueing = null;
      }
      for (const node of graph._nodes) applyControlsAfterQueue(node);
      app.tabs.checkChanges();
    }
    document.dispatchEvent(new CustomEvent("loom:queued"));
    return true;
  }

  private graphFor(promptId: string): LGraph | null {
    return this.app.promptGraphs.get(promptId) ?? null;
  }

  private countRunnable(graph: LGraph): number {
    let n = 0;
    for (const node of graph._nodes) {
      if (node.mode === 0 && !isMissingNode(node) && this.app.info[node.type ?? ""]) n++;
    }
    return Math.max(n, 1);
  }

  private onStart(d: any): void {
    // Events come only for prompts this tab queued: an unknown id is one whose HTTP answer is
    // still on its way, or one queued before a reload (shown on the active graph).
    let graph = this.graphFor(d.prompt_id);
    if (!graph) {
      graph = this.queueing ?? this.app.graph;
      this.app.promptGraphs.set(d.prompt_id, graph);
    }
    for (const node of graph._nodes as LoomNode[]) {
      node.progress = undefined;
      if (node.loom) node.loom.running = false;
      if (node.loom?.images?.preview) clearNodeImages(node);
    }
    clearErrors(graph);
    this.run = { promptId: d.prompt_id, graph, total: this.countRunnable(graph), done: new Set(),
      current: null, step: null, startedAt: performance.now() };
    this.render();
  }

  private onCached(d: any): void {
    if (!this.run || d.prompt_id !== this.run.promptId) return;
    for (const id of d.nodes ?? []) this.run.done.add(String(id));
    this.render();
  }

  private setRunning(id: string | null): void {
    const run = this.run!;
    if (run.current) {
      const prev = nodeById(run.graph, run.current) as LoomNode | undefined;
      if (prev?.loom) prev.loom.running = false;
      if (prev) prev.progress = undefined;
      run.done.add(run.current);
    }
    run.current = id;
    run.step = null;
    if (id) {
      const node = nodeById(run.graph, id) as LoomNode | undefined;
      if (node?.loom) node.loom.running = true;
    }
    run.graph.setDirtyCanvas(true, false);
  }

  private onExecuting(d: any): void {
    if (!this.run || (d.prompt_id && d.prompt_id !== this.run.promptId)) {
      // A reloaded tab: adopt the running prompt if it is ours and we know nothing of it.
      if (d.node && d.prompt_id && !this.run) {
        this.app.promptGraphs.set(d.prompt_id, this.app.graph);
        this.onStart(d);
      } else return;
    }
    if (!this.run) return;
    const id = d.node == null ? null : String(d.display_node ?? d.node);
    this.setRunning(id);
    if (id === null) this.finish(this.run.promptId);
    else this.render();
  }

  private onProgress(d: any): void {
    const run = this.run;
    if (!run || (d.prompt_id && d.prompt_id !== run.promptId)) return;
    const id = d.node != null ? String(d.node) : run.current;
    if (id && id !== run.current) this.setRunning(id);
    const node = id ? (nodeById(run.graph, id) as LoomNode | undefined) : undefined;
    if (node && d.max > 0) node.progress = Math.min(1, d.value / d.max);
    if (!run.step || d.value < run.step.value) run.step = { value: d.value, max: d.max, startedAt: performance.now() };
    else run.step.value = d.value;
    run.step.max = d.max;
    run.graph.setDirtyCanvas(true, false);
    this.render();
  }

  /** Newer servers send every node's state at once; use it for the done/running counts. */
  private onProgressState(d: any): void {
    const run = this.run;
    if (!run || d.prompt_id !== run.promptId || !d.nodes) return;
    for (const [id, s] of Object.entries<any>(d.nodes)) {
      const key = String(s?.display_node_id ?? s?.node_id ?? id);
      if (s?.state === "finished") run.done.add(key);
    }
    this.render();
  }

  private onExecuted(d: any): void {
    const graph = this.graphFor(d.prompt_id) ?? (this.run ? null : this.app.graph);
    if (!graph) return;
    const node = nodeById(graph, String(d.display_node ?? d.node));
    const images: ImageRef[] = d.output?.images ?? [];
    if (node && images.length) {
      setNodeImages(node, images.map((img) => api.viewUrl(img, `&t=${Date.now()}`)));
    }
    document.dispatchEvent(new CustomEvent("loom:executed", { detail: d }));
  }

  private onError(d: any): void {
    const graph = this.graphFor(d.prompt_id);
    if (graph) showExecutionError(graph, d);
    else toast(`A prompt failed: ${d.exception_message ?? "error"}`, "error", 8000);
    this.finish(d.prompt_id);
  }

  private onInterrupted(d: any): void {
    if (this.run && d.prompt_id === this.run.promptId) toast("Interrupted", "info");
    this.finish(d.prompt_id);
  }

  private onPreview(blob: Blob): void {
    const run = this.run;
    if (!run?.current) return;
    const node = nodeById(run.graph, run.current);
    if (node) setNodeImages(node, [URL.createObjectURL(blob)], true);
  }

  private finish(promptId?: string): void {
    const run = this.run;
    if (!run || (promptId && promptId !== run.promptId)) return;
    if (run.current) this.setRunning(null);
    // The last preview stays on the sampling node (labelled "preview") until the next run.
    for (const node of run.graph._nodes as LoomNode[]) {
      node.progress = undefined;
      if (node.loom) node.loom.running = false;
    }
    this.run = null;
    run.graph.setDirtyCanvas(true, true);
    this.render();
  }

  /** The overall bar: finished nodes plus the running node's share, and an ETA from steps. */
  private render(): void {
    const run = this.run;
    if (!run) {
      this.fill.style.width = "0%";
      this.text.textContent = "";
      document.body.dataset.running = "";
      return;
    }
    document.body.dataset.running = "1";
    const stepShare = run.step && run.step.max > 0 ? run.step.value / run.step.max : 0;
    const done = Math.min(run.done.size, run.total);
    const fraction = Math.min(1, (done + (run.current ? stepShare : 0)) / run.total);
    this.fill.style.width = `${(fraction * 100).toFixed(1)}%`;
    let text = `${done}/${run.total} nodes`;
    if (run.step && run.step.max > 1) {
      text += ` · step ${run.step.value}/${run.step.max}`;
      const elapsed = (performance.now() - run.step.startedAt) / 1000;
      if (run.step.value > 0) {
        const eta = (elapsed / run.step.value) * (run.step.max - run.step.value);
        text += ` · ETA ${formatDuration(eta)}`;
      }
    }
    this.text.textContent = text;
  }
}

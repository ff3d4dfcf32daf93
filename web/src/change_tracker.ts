// Undo/redo by snapshots: after each user gesture the tab's workflow is serialised and, when it
// differs from the last snapshot, the old one goes on the undo stack. The same snapshot feeds
// the autosave, so one serialisation per change serves both.

import type { LGraph } from "@comfyorg/litegraph";

const MAX_UNDO = 100;

export function snapshot(graph: LGraph): any {
  const data: any = graph.serialize();
  // Subgraph definitions the editor keeps as placeholders (it does not edit subgraphs): litegraph
  // writes only those of real subgraph nodes, so put the loaded ones back.
  const kept = (graph as any).loomDefinitions;
  if (kept?.subgraphs?.length && !data.definitions?.subgraphs?.length) data.definitions = kept;
  // Panning and zooming are not edits.
  if (data.extra) delete data.extra.ds;
  return data;
}

export class ChangeTracker {
  private undoStack: string[] = [];
  private redoStack: string[] = [];
  private baseline: string | null = null;

  constructor(
    private graph: LGraph,
    private restore: (workflow: any) => void,
  ) {}

  /** The last recorded state (taken on first use: a big workflow draws before it is copied). */
  get current(): string {
    if (this.baseline === null) this.baseline = JSON.stringify(snapshot(this.graph));
    return this.baseline;
  }

  set current(value: string) {
    this.baseline = value;
  }

  /** Records the graph's state; true when it changed since the last check. */
  check(): boolean {
    if (this.baseline === null) {
      this.current; // first look: this is the baseline, not a change
      return false;
    }
    const now = JSON.stringify(snapshot(this.graph));
    if (now === this.current) return false;
    this.undoStack.push(this.current);
    if (this.undoStack.length > MAX_UNDO) this.undoStack.shift();
    this.redoStack = [];
    this.current = now;
    return true;
  }

  /** Forgets history (after loading a different workflow into the tab). */
  reset(): void {
    this.undoStack = [];
    this.redoStack = [];
    this.current = JSON.stringify(snapshot(this.graph));
  }

  undo(): boolean {
    this.check(); // first (it may start a new redo stack): an unrecorded edit is undone too
    return this.step(this.undoStack, this.redoStack);
  }

  redo(): boolean {
    this.check();
    return this.step(this.redoStack, this.undoStack);
  }

  /** Goes to the newest state of `from`, keeping the present one on `to`. */
  private step(from: string[], to: string[]): boolean {
    const target = from.pop();
    if (target === undefined) return false;
    to.push(this.current);
    this.current = target;
    this.restore(JSON.parse(target));
    return true;
  }

  get canUndo(): boolean {
    return this.undoStack.length > 0;
  }
}

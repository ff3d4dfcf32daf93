"""The state of every node of a running prompt, for ComfyUI's ``progress_state`` message.

Newer ComfyUI front ends draw the running node and the total progress from
``{"type": "progress_state", "data": {"prompt_id", "nodes": {id: {"value", "max", "state",
"node_id", "prompt_id", "display_node_id", "parent_node_id", "real_node_id"}}}}``, where
``state`` is ``running``, ``finished`` or ``error`` (pending nodes are left out) and each message
holds the whole state, not a change.

Whole states make a message grow with the graph, and a 1,000-node prompt changes state 2,000
times: copying the state per change would be quadratic. So changes are appended to a log and
each event carries a :class:`ProgressSnapshot` (the log and a length, O(1) to make). Only the
snapshots that are sent are turned into dicts, and the websocket hub sends only the newest of
the ones waiting in a batch. The executor takes a snapshot when a node starts or reports
progress, and at the end: a node's "finished" rides with the next node's start.
"""

from __future__ import annotations

from typing import Any

RUNNING, FINISHED, ERROR = "running", "finished", "error"


class ProgressLog:
    """Node state changes of one prompt, in order (appended by the executor's thread)."""

    def __init__(self, prompt_id: str):
        self.prompt_id = prompt_id
        self._changes: list[tuple[str, str, float, float]] = []
        self._last: dict[str, tuple[str, float, float]] = {}
        self._taken = 0  # changes covered by the last snapshot

    def _set(self, node_id: str, state: str, value: float, total: float) -> None:
        self._last[node_id] = (state, value, total)
        # list.append is atomic: a snapshot read in another thread sees a consistent prefix.
        self._changes.append((node_id, state, value, total))

    def start(self, node_id: str) -> None:
        self._set(node_id, RUNNING, 0, 1)

    def update(self, node_id: str, value: float, total: float) -> None:
        self._set(node_id, RUNNING, value, total)

    def finish(self, node_id: str) -> None:
        _, _, total = self._last.get(node_id, (RUNNING, 0, 1))
        self._set(node_id, FINISHED, total, total)

    def error(self, node_id: str) -> None:
        _, value, total = self._last.get(node_id, (RUNNING, 0, 1))
        self._set(node_id, ERROR, value, total)

    @property
    def changed(self) -> bool:
        """Whether something changed since the last snapshot."""
        return len(self._changes) > self._taken

    def snapshot(self) -> ProgressSnapshot:
        self._taken = len(self._changes)
        return ProgressSnapshot(self, self._taken)


class ProgressSnapshot:
    """The states after the first ``length`` changes of a log; JSON via :meth:`to_json`."""

    __slots__ = ("log", "length")

    def __init__(self, log: ProgressLog, length: int):
        self.log, self.length = log, length

    def states(self) -> dict[str, tuple[str, float, float]]:
        out: dict[str, tuple[str, float, float]] = {}
        for node_id, state, value, total in self.log._changes[:self.length]:
            out[node_id] = (state, value, total)
        return out

    def to_json(self) -> dict[str, Any]:
        prompt_id = self.log.prompt_id
        # Loom runs no expanded subgraphs: a node is its own display and real node.
        return {node_id: {"value": value, "max": total, "state": state, "node_id": node_id,
                          "prompt_id": prompt_id, "display_node_id": node_id,
                          "parent_node_id": None, "real_node_id": node_id}
                for node_id, (state, value, total) in self.states().items()}

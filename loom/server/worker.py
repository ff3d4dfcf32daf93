"""Workers: threads that take prompts from the queue and run them.

Each worker owns an :class:`~loom.engine.executor.Executor` with its own output cache and runs
one prompt at a time off the event loop, so the server answers while a node runs for a minute.
The boundary between queue and worker is four calls on :class:`~loom.store.queue.PromptQueue`
(``wait_for_work``, ``claim``, ``finish``, ``release``) and one callback for events: several
workers can share a queue now, and a worker per GPU, or one on another machine speaking those
calls over a transport such as Ray, fits the same shape.

A prompt is validated again when a worker claims it if the node classes changed since it was
queued, or it was queued before a restart (it then comes from the database). A prompt queued by
this process with the same node classes is run as validated by ``POST /prompt`` (its
:class:`Prevalidated` payload): validating a 1,000-node prompt twice would double the cost of a
cached re-queue. (A model file deleted in between is then reported by the node that loads it.)
A prompt that no longer validates gets an error history entry and an ``execution_error`` event.

A prompt ends as in ComfyUI: ``execution_success`` (or ``_error``, ``_interrupted``), a
``status`` broadcast, then ``executing`` with node None; all three after the history entry is
written, so a client may fetch it on any of them. Step previews are made only when someone
will see them (see :mod:`loom.server.previews`).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loom.engine import allocator
from loom.engine.cache import OutputCache
from loom.engine.executor import ExecutionResult, Executor
from loom.engine.validate import ValidatedPrompt, validate_prompt
from loom.graph.errors import PromptError
from loom.nodeapi.node import RunContext
from loom.nodeapi.registry import NodeRegistry
from loom.server.previews import encode_output_image, encode_preview, preview_request
from loom.store.queue import PromptQueue, QueueItem

log = logging.getLogger("loom.worker")

# (event, data, client_id) -> delivered to websocket clients; called from the worker thread.
# ("status", None, None) asks for a status broadcast of the queue as it is then.
EventSink = Callable[[str, Any, "str | None"], None]
# (client_id, explicit) -> whether anyone would see the step previews of such a prompt.
PreviewAudience = Callable[["str | None", bool], bool]

TERMINAL_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


@dataclass
class Prevalidated:
    """What ``POST /prompt`` hands the worker through the queue: the validated prompt and the
    node classes it was validated against."""

    prompt: ValidatedPrompt
    classes: dict[str, type]


class _PromptEvents:
    """The executor's events of one prompt, on their way to the clients: step previews and
    output images encoded as binary frames; the terminal events held back (``deferred``) until
    the history entry is written, so a client that fetches /history/{id} on them finds it."""

    def __init__(self, worker: Worker, item: QueueItem, explicit_previews: bool):
        self.worker, self.item, self.explicit = worker, item, explicit_previews
        self.deferred: list[tuple[str, dict]] = []

    def __call__(self, event: str, data: dict) -> None:
        w, client_id, prompt_id = self.worker, self.item.client_id, self.item.prompt_id
        if event == "execution_start":
            w._started = True
        elif event == "executing":
            w.current_node = data.get("node")
        if event in TERMINAL_EVENTS or (event == "executing" and data.get("node") is None):
            self.deferred.append((event, data))
        elif event == "preview_image":
            frame = encode_preview(data.get("image"), data["node"], prompt_id, self.explicit)
            if frame is not None:
                w.sink(event, frame, client_id)
        elif event == "output_image":
            frame = encode_output_image(data.get("image"), data["node"], prompt_id)
            if frame is not None:
                w.sink(event, frame, client_id)
        else:
            w.sink(event, data, client_id)


class Worker:
    def __init__(self, worker_id: str, queue: PromptQueue, registry: NodeRegistry, *,
                 sink: EventSink, cache: OutputCache | None = None, folders: Any = None,
                 models: Any = None, settings: Any = None,
                 preview_audience: PreviewAudience | None = None):
        self.worker_id = worker_id
        self.queue = queue
        self.registry = registry
        self.sink = sink
        self.settings = settings
        self.preview_audience = preview_audience or (lambda client_id, explicit: False)
        self.executor = Executor(cache or OutputCache(), paths=folders, models=models,
                                 settings=settings)
        self.validation_ctx = RunContext(paths=folders, models=models, settings=settings)
        self.current: str | None = None  # prompt id being run
        self.current_client: str | None = None  # and who queued it
        self.current_node: str | None = None  # the node it is running
        self._lock = threading.Lock()
        # The running prompt's stop flag: made per prompt, set by interrupt() and stop(), read by
        # the executor and the nodes. Made before the run starts, so an early interrupt holds.
        self._run_interrupt = threading.Event()
        self._interrupt_requested = False
        self._started = False  # whether execution_start went out for the current prompt
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_result: ExecutionResult | None = None

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"loom-{self.worker_id}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current node; an unfinished prompt goes back to the queue."""
        self._stopping.set()
        self._run_interrupt.set()
        self.queue.wake_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s did not stop within %.0f s (a node ignores interrupt)",
                            self.worker_id, timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupt the running prompt (only if it is ``prompt_id``, when given)."""
        with self._lock:
            if self.current is None or (prompt_id is not None and prompt_id != self.current):
                return False
            self._interrupt_requested = True
            self._run_interrupt.set()
            return True

    # -- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            generation = self.queue.generation
            try:
                item = self.queue.claim(self.worker_id)
            except Exception:
                log.exception("%s could not claim from the queue", self.worker_id)
                self._stopping.wait(1.0)
                continue
            if item is None:
                self.queue.wait_for_work(generation, timeout=5.0)
                continue
            try:
                self.process(item)
            except BaseException as e:  # a bug (or an output that is not JSON) must not kill it
                log.exception("%s failed on prompt %s", self.worker_id, item.prompt_id)
                self._finish_with_error(item, f"Loom could not complete the prompt: "
                                        f"{type(e).__name__}: {e}", traceback.format_exc(), [])
            del item
            # What the prompt and the cache's evictions freed goes back to the OS (the client
            # already has its answer); without it RSS drifts past the cache budget.
            allocator.trim()

    def process(self, item: QueueItem) -> None:
        with self._lock:
            self.current = item.prompt_id
            self.current_client = item.client_id
            self.current_node = None
            self._interrupt_requested = False
            self._run_interrupt = interrupt = threading.Event()
            if self._stopping.is_set():
                interrupt.set()
        self._started = False
        request = preview_request(item.extra_data,
                                  getattr(self.settings, "preview_method", "latent2rgb"))
        events = _PromptEvents(self, item, request.explicit)
        try:
            validated = self._validated(item)
            if validated is None:
                return
            result = self.executor.execute(
                validated, item.prompt_id, events, item.extra_data,
                previews=request.enabled and self.preview_audience(item.client_id,
                                                                   request.explicit),
                on_file_saved=lambda path: self.queue.note_file(item.prompt_id, path),
                interrupt=interrupt)
            self.last_result = result
            if result.status == "interrupted" and self._stopping.is_set() \
                    and not self._interrupt_requested:
                # Stopped by shutdown, not by the user: run it again after the restart, without
                # the files this attempt wrote.
                for path in self.queue.release(item.prompt_id):
                    self._remove_file(path)
                return
            self.queue.finish(item, self.history_entry(item, result),
                              "success" if result.status == "success" else result.status,
                              notify=False)
            self._send_end(events.deferred, item.client_id)
        finally:
            with self._lock:
                self.current = self.current_client = self.current_node = None
                self._interrupt_requested = False

    def _validated(self, item: QueueItem) -> ValidatedPrompt | None:
        """The prompt as validated by ``POST /prompt`` when the node classes are the same, else
        validated again; None (after an error entry and events) when it no longer validates."""
        pre = item.payload
        if isinstance(pre, Prevalidated) and pre.classes == self.registry.classes:
            return pre.prompt
        try:
            return validate_prompt(item.prompt, self.registry, self.validation_ctx,
                                   partial_outputs=item.outputs or None)
        except PromptError as e:
            self._finish_with_error(item, f"{e.message}: {e.details}" if e.details else e.message,
                                    [], [], error_type="loom.graph.errors.PromptError",
                                    node_errors=e.node_errors)
            return None

    def _send_end(self, deferred: list[tuple[str, dict]], client_id: str | None) -> None:
        """The end of a prompt, in ComfyUI's order: the terminal event, the queue's status,
        then ``executing`` None."""
        last = [(e, d) for e, d in deferred if e == "executing"]
        for event, data in deferred:
            if event != "executing":
                self.sink(event, data, client_id)
        self.sink("status", None, None)
        for event, data in last:
            self.sink(event, data, client_id)

    def _remove_file(self, path: str) -> None:
        folders = self.executor.paths
        if folders is not None and hasattr(folders, "remove_output_file"):
            folders.remove_output_file(path)

    @staticmethod
    def history_entry(item: QueueItem, result: ExecutionResult) -> dict:
        """The entry without its "prompt" list, which the queue adds from the stored JSON."""
        return {
            "outputs": result.outputs,
            "status": {
                "status_str": "success" if result.status == "success" else "error",
                "completed": result.status == "success",
                "messages": [[event, data] for event, data in result.messages],
            },
            "meta": {node_id: {"node_id": node_id, "display_node": node_id, "parent_node": None,
                               "real_node_id": node_id} for node_id in result.outputs},
        }

    def _finish_with_error(self, item: QueueItem, message: str, tb: list[str] | str,
                           executed: list[str], *, error_type: str = "loom.InternalError",
                           node_errors: dict | None = None) -> None:
        """A prompt that failed outside its nodes (validation, or a bug): error history and
        events, so the client is not left waiting."""
        now = int(time.time() * 1000)
        error = {"prompt_id": item.prompt_id, "node_id": None, "node_type": None,
                 "executed": executed, "exception_message": message, "exception_type": error_type,
                 "traceback": [tb] if isinstance(tb, str) else tb, "current_inputs": {},
                 "current_outputs": []}
        if node_errors:
            error["node_errors"] = node_errors
        entry = {
            "outputs": {},
            "status": {"status_str": "error", "completed": False, "messages": [
                ["execution_start", {"prompt_id": item.prompt_id, "timestamp": now}],
                ["execution_error", {**error, "timestamp": now}]]},
            "meta": {},
        }
        try:
            self.queue.finish(item, entry, "error", notify=False)
        except Exception:
            log.exception("could not record the failure of prompt %s", item.prompt_id)
        if not self._started:
            self.sink("execution_start", {"prompt_id": item.prompt_id, "timestamp": now},
                      item.client_id)
        self._send_end([("execution_error", {**error, "timestamp": now}),
                        ("executing", {"node": None, "prompt_id": item.prompt_id})],
                       item.client_id)


class WorkerPool:
    """The workers of one server: ``settings.workers`` of them on one queue."""

    def __init__(self, workers: list[Worker]):
        self.workers = workers

    def start(self) -> None:
        for w in self.workers:
            w.start()

    def stop(self, timeout: float = 10.0) -> None:
        for w in self.workers:
            w._stopping.set()
            w._run_interrupt.set()
        for w in self.workers:
            w.stop(timeout)

    def interrupt(self, prompt_id: str | None = None) -> bool:
        hit = False
        for w in self.workers:
            hit = w.interrupt(prompt_id) or hit
        return hit

    def running(self) -> list[str]:
        return [w.current for w in self.workers if w.current]

    def clear_caches(self) -> None:
        for w in self.workers:
            w.executor.cache.clear()
            w.last_result = None

    def cache_stats(self) -> list[dict]:
        return [w.executor.cache.stats() for w in self.workers]

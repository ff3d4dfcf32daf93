"""Runs a validated prompt: order, cache, progress, interrupt and error events.

One executor per worker; each owns its cache. Events go to an ``emit(event, data)`` callback
with ComfyUI's websocket message names and order, so the server only has to forward them:

    execution_start, execution_cached, [executed of cached output nodes],
    per node run: progress_state, executing, [progress_state + progress (+ preview_image)
    per step], [executed];
    then progress_state, execution_success | execution_error | execution_interrupted, and
    executing None.

(A node's "finished" in ``progress_state`` rides with the next node's start: one message per
node, not two.)

``execution_*`` events carry a ``timestamp`` (ms), as ComfyUI's. Two events are not JSON:
``preview_image`` (a step preview; only when the prompt runs with ``previews``) and
``output_image`` (an image a node sends to the client, e.g. SaveImageWebsocket); the server
encodes them as binary frames.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loom.engine.cache import OutputCache
from loom.engine.order import postorder
from loom.engine.progress import ProgressLog
from loom.engine.validate import NodeSpec, ValidatedPrompt
from loom.frozen import freeze
from loom.nodeapi.guard import reraise_if_fatal
from loom.nodeapi.inputs import Hidden
from loom.nodeapi.node import ALWAYS_RUN, Interrupted, NodeResult, RunContext

log = logging.getLogger("loom.engine")

Emit = Callable[[str, dict], None]

# The events kept in the history entry's status messages, each with a timestamp.
STATUS_EVENTS = frozenset({"execution_start", "execution_cached", "execution_success",
                           "execution_error", "execution_interrupted"})


class NodeExecutionError(Exception):
    def __init__(self, node_id: str, class_type: str, cause: BaseException):
        super().__init__(f"{class_type} (node {node_id}): {type(cause).__name__}: {cause}")
        self.node_id, self.class_type, self.cause = node_id, class_type, cause


@dataclass
class ExecutionResult:
    status: str  # "success" | "error" | "interrupted"
    outputs: dict[str, dict] = field(default_factory=dict)  # node id -> UI output
    executed: list[str] = field(default_factory=list)  # node ids that ran
    cached: list[str] = field(default_factory=list)  # node ids served from the cache
    messages: list[tuple[str, dict]] = field(default_factory=list)
    error: dict | None = None
    seconds: float = 0.0


@dataclass
class _Run:
    """What the nodes of one prompt's run share."""

    prompt: ValidatedPrompt
    prompt_id: str
    extra_data: dict
    send: Emit
    progress: ProgressLog
    previews: bool
    on_file_saved: Callable[[str], None] | None
    interrupt: threading.Event

    def send_progress_state(self) -> None:
        if self.progress.changed:
            self.send("progress_state", {"nodes": self.progress.snapshot()})


class Executor:
    def __init__(self, cache: OutputCache | None = None, *, paths: Any = None,
                 models: Any = None, settings: Any = None):
        self.cache = cache or OutputCache()
        self.paths, self.models, self.settings = paths, models, settings
        self.interrupt = threading.Event()

    # -- signatures -------------------------------------------------------------------------

    def signatures(self, prompt: ValidatedPrompt, roots: list[str]) -> dict[str, str]:
        """Signature of every node reachable from ``roots``: its class, version, constants,
        upstream signatures and fingerprint, hashed. Equal signature means equal outputs."""
        sigs: dict[str, str] = {}
        ctx = RunContext(paths=self.paths, models=self.models, settings=self.settings)
        for node_id in postorder(prompt.nodes, roots):
            spec = prompt.nodes[node_id]
            ctx.node_id = node_id
            try:
                fp = spec.cls.fingerprint(ctx, **spec.consts)
            except BaseException as e:  # node code: even sys.exit() only costs the cache hit
                reraise_if_fatal(e)
                log.exception("fingerprint of %s (node %s) failed; it will re-run",
                              spec.class_type, node_id)
                fp = ALWAYS_RUN
            fp_text = uuid.uuid4().hex if fp is ALWAYS_RUN else repr(fp)
            links = ",".join(f"{name}={sigs[link.node_id]}:{link.slot}"
                             for name, link in sorted(spec.links.items()))
            text = (f"{spec.class_type}|{spec.cls.version}|"
                    f"{json.dumps(spec.consts, sort_keys=True, default=repr)}|{links}|{fp_text}")
            sigs[node_id] = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
        return sigs

    # -- execution --------------------------------------------------------------------------

    def execute(self, prompt: ValidatedPrompt, prompt_id: str, emit: Emit | None = None,
                extra_data: dict | None = None, *, previews: bool = False,
                on_file_saved: Callable[[str], None] | None = None,
                interrupt: threading.Event | None = None) -> ExecutionResult:
        """Run ``prompt``. ``previews``: someone will see step previews, so nodes may make them
        (``ctx.previews``) and they are passed on as ``preview_image`` events.
        ``on_file_saved(path)`` hears of every file a node wrote. ``interrupt``: the run's stop
        flag, owned by the caller (a worker makes one per prompt, so an interrupt that comes
        before the run starts is kept); without it the executor's own ``interrupt`` is cleared
        and used."""
        start = time.perf_counter()
        if interrupt is None:
            interrupt = self.interrupt
            interrupt.clear()
        result = ExecutionResult(status="success")
        run = _Run(prompt, prompt_id, extra_data or {}, _event_sender(result, prompt_id, emit),
                   ProgressLog(prompt_id), previews, on_file_saved, interrupt)
        run.send("execution_start", {})
        sigs = self.signatures(prompt, prompt.outputs)
        hits = self._cache_hits(prompt, sigs, result, run.send, run.progress)
        values: dict[str, tuple] = {n: e.outputs for n, e in hits.items()}
        current = None
        try:
            for node_id in postorder(prompt.nodes, prompt.outputs, stop=hits):
                if interrupt.is_set():
                    raise Interrupted()
                current = prompt.nodes[node_id]
                run.progress.start(node_id)
                run.send_progress_state()
                run.send("executing", {"node": node_id, "display_node": node_id})
                outputs, ui = self._run_node(current, values, run)
                values[node_id] = outputs
                result.executed.append(node_id)
                self.cache.put(sigs[node_id], outputs, ui)
                if ui:
                    result.outputs[node_id] = ui
                    run.send("executed", {"node": node_id, "display_node": node_id, "output": ui})
                run.progress.finish(node_id)
        except Interrupted:
            result.status = "interrupted"
            run.send_progress_state()
            run.send("execution_interrupted", {"node_id": current.node_id if current else None,
                                               "node_type": current.class_type if current else None,
                                               "executed": result.executed})
        except NodeExecutionError as e:
            result.status = "error"
            result.error = _error_event(e, current, result)
            log.error("Error in %s (node %s) of prompt %s:\n%s", e.class_type, e.node_id,
                      prompt_id, "".join(result.error["traceback"]))
            run.progress.error(e.node_id)
            run.send_progress_state()
            run.send("execution_error", result.error)
        else:
            run.send_progress_state()
            run.send("execution_success", {})
        finally:
            result.seconds = time.perf_counter() - start
            if emit is not None:
                emit("executing", {"node": None, "prompt_id": prompt_id})
        return result

    def _cache_hits(self, prompt: ValidatedPrompt, sigs: dict[str, str],
                    result: ExecutionResult, send: Emit, progress: ProgressLog) -> dict[str, Any]:
        """Cache entries for the nodes whose signature is cached (held here so eviction mid-run
        cannot lose them); cached output nodes show their UI output again."""
        hits: dict[str, Any] = {}
        for node_id, sig in sigs.items():
            entry = self.cache.get(sig)
            if entry is not None:
                hits[node_id] = entry
        result.cached = [n for n in sigs if n in hits]
        send("execution_cached", {"nodes": result.cached})
        for node_id in prompt.outputs:
            if node_id in hits:
                if hits[node_id].ui:
                    result.outputs[node_id] = hits[node_id].ui
                    send("executed", {"node": node_id, "display_node": node_id,
                                      "output": hits[node_id].ui})
                progress.finish(node_id)
        return hits

    def _run_node(self, spec: NodeSpec, values: dict[str, tuple], run: _Run,
                  ) -> tuple[tuple, dict | None]:
        kwargs = dict(spec.consts)
        for name, link in spec.links.items():
            kwargs[name] = values[link.node_id][link.slot]
        for name, inp in spec.cls.inputs.items():
            if isinstance(inp, Hidden):
                kwargs[name] = {"PROMPT": run.prompt.raw, "UNIQUE_ID": spec.node_id,
                                "EXTRA_PNGINFO": run.extra_data.get("extra_pnginfo"),
                                "PROMPT_ID": run.prompt_id}.get(inp.type)

        node_id, send = spec.node_id, run.send

        def on_progress(value: int, total: int, preview: Any = None) -> None:
            run.progress.update(node_id, value, total)
            send("progress_state", {"nodes": run.progress.snapshot()})
            send("progress", {"value": int(value), "max": int(total), "node": node_id})
            if preview is not None and run.previews:
                # An image of the work in progress (e.g. a decoded latent); the server encodes
                # it for the client. The engine does not care what it is.
                send("preview_image", {"node": node_id, "image": preview})

        def on_image(image: Any) -> None:
            send("output_image", {"node": node_id, "image": image})

        ctx = RunContext(node_id=node_id, prompt_id=run.prompt_id, paths=self.paths,
                         models=self.models, settings=self.settings, interrupt=run.interrupt,
                         on_progress=on_progress, on_image=on_image, previews=run.previews,
                         on_file_saved=run.on_file_saved)
        try:
            node = spec.cls(ctx)
            # The model manager (when there is one) places what the node declares, makes room
            # for its working memory and retries it once after an out-of-memory error.
            run_node = getattr(self.models, "run_node", None)
            out = (run_node(node, kwargs, f"{spec.class_type} (node {node_id})")
                   if run_node is not None else node.run(**kwargs))
            ui = None
            if isinstance(out, NodeResult):
                out, ui = tuple(out.outputs), out.ui
            elif out is None:
                out = ()
            if not isinstance(out, tuple):
                raise TypeError(f"run() must return a tuple or NodeResult, not "
                                f"{type(out).__name__}")
            if len(out) != len(spec.cls.outputs):
                raise TypeError(f"run() returned {len(out)} value(s) but the node declares "
                                f"{len(spec.cls.outputs)} output(s)")
            return _seal(out, spec.cls.outputs), ui
        except Interrupted:
            raise
        except BaseException as e:  # sys.exit() too: it ends the prompt, not the worker
            reraise_if_fatal(e)
            raise NodeExecutionError(node_id, spec.class_type, e) from e


# Output types whose values are plain lists/dicts that downstream nodes read: sealed so that
# no node can change a cached value in place (copy on write; see loom.frozen).
SEALED_TYPES = frozenset({"CONDITIONING"})


def _seal(out: tuple, declared) -> tuple:
    return tuple(freeze(v) if o.type in SEALED_TYPES else v
                 for v, o in zip(out, declared, strict=True))



def _event_sender(result: ExecutionResult, prompt_id: str, emit: Emit | None) -> Emit:
    """``send(event, data)`` for one run: stamps the prompt id, keeps status events (with a
    timestamp) in ``result.messages`` and passes everything to ``emit``."""

    def send(event: str, data: dict) -> None:
        data = {**data, "prompt_id": prompt_id}
        if event in STATUS_EVENTS:
            data["timestamp"] = int(time.time() * 1000)
            result.messages.append((event, data))
        if emit is not None:
            emit(event, data)

    return send


def _error_event(e: NodeExecutionError, current: NodeSpec, result: ExecutionResult) -> dict:
    """ComfyUI's ``execution_error`` payload for a node that raised."""
    cause = e.cause
    return {
        "node_id": e.node_id, "node_type": e.class_type, "executed": result.executed,
        "exception_message": str(cause) or type(cause).__name__,
        "exception_type": f"{type(cause).__module__}.{type(cause).__qualname__}",
        "traceback": traceback.format_exception(cause),
        "current_inputs": {k: _short(v) for k, v in current.consts.items()},
        "current_outputs": list(result.outputs),
    }


def _short(value: Any) -> Any:
    if isinstance(value, str) and len(value) > 500:
        return value[:500] + "…"
    return value

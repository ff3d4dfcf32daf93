"""The aiohttp application: ``create_app(settings)`` builds it, ``main.py`` runs it.

Routes are grouped by resource in :mod:`loom.server.routes` (each module a ``RouteTableDef``
named ``routes``) and registered twice, at ``/x`` and at ``/api/x`` (ComfyUI's newer clients use
the prefix). Everything one server holds is an :class:`~loom.server.state.AppState` on the app.

Start-up (in order): folders are created, node packs loaded (built-in ``nodes/`` first, then
``custom_nodes/`` unless disabled), the SQLite store opened, prompts a crash left running put
back in the queue, and the workers started. Clean-up closes websockets, stops the workers
(an unfinished prompt stays queued for the next start) and closes the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from loom.config import Settings
from loom.engine.cache import OutputCache
from loom.engine.validate import ValidatorUnavailable
from loom.graph.errors import PromptError
from loom.nodeapi.registry import NodeRegistry
from loom.paths import UnsafePathError
from loom.server.front_end import web_root
from loom.server.routes import (
    files,
    history,
    jobs,
    nodes,
    prompt,
    queue,
    system,
    templates,
    userdata,
    web_pages,
    workflow,
    ws,
)
from loom.server.routes._common import ApiError, error_response
from loom.server.state import STATE, AppState, LazyModelManager
from loom.server.worker import Worker, WorkerPool
from loom.server.ws import Hub
from loom.store import Store
from loom.store.userdata import UserFileExists, UserPathError

log = logging.getLogger("loom.server")

# web_pages last: its catch-all static route must come after every other route.
ROUTE_MODULES = [prompt, queue, history, jobs, workflow, nodes, files, system, templates, userdata,
                 ws, web_pages]

_HTTP_ERROR_TYPES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden",
                     404: "not_found", 405: "method_not_allowed", 409: "conflict",
                     413: "too_large", 415: "unsupported_media_type"}


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Client mistakes become JSON 4xx responses; anything unexpected a logged JSON 500."""
    try:
        return await handler(request)
    except ApiError as e:
        return e.response()
    except PromptError as e:
        return web.json_response(e.to_json(), status=400)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return error_response(400, "invalid_json", f"Malformed request body: {e}")
    except (UnsafePathError, UserPathError) as e:
        return error_response(400, "invalid_path", str(e))
    except UserFileExists as e:
        return error_response(409, "exists", f"{e}; pass ?overwrite=true to replace it")
    except ValidatorUnavailable as e:
        log.exception("Validation could not run")
        return error_response(503, "server_setup_error", str(e))
    except HttpProcessingError as e:  # a malformed body part a route was reading
        return error_response(400, "invalid_request", f"Malformed request: {e.message}")
    except web.HTTPException as e:
        if e.status < 400 or e.content_type == "application/json":
            raise
        headers = {k: v for k, v in e.headers.items()
                   if k.lower() not in ("content-type", "content-length")}
        response = error_response(e.status, _HTTP_ERROR_TYPES.get(e.status, "http_error"),
                                  e.reason if not e.text or e.text.startswith(f"{e.status}:")
                                  else e.text)
        response.headers.update(headers)
        response.set_status(e.status, e.reason)
        return response
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as e:
        if type(e) is sqlite3.DatabaseError:  # damage found while serving (its subclasses,
            # locked or constraint errors, are bugs: a 500 like any other)
            log.exception("The database is damaged (%s %s)", request.method, request.path)
            return error_response(503, "database_damaged", f"Loom's database is damaged ({e}); "
                                  "restart Loom: it checks the database and says what to do")
        log.exception("Unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal_error",
                              "Internal server error (see the server log for details)")


def _security(settings: Settings) -> list:
    from loom.server.security import build_middlewares, check_startup_security

    check_startup_security(settings)
    return build_middlewares(settings)


def create_app(settings: Settings, registry: NodeRegistry | None = None) -> web.Application:
    """The Loom server for ``settings``. With a ``registry`` given, its nodes are used as they
    are (no packs are loaded); otherwise packs are loaded at start-up."""
    app = web.Application(middlewares=[*_security(settings), error_middleware],
                          client_max_size=settings.max_upload_mb * 2**20 + 64 * 1024)
    root = web_root(settings)  # FrontEndMissing (how to install it) before anything starts
    app[STATE] = AppState(settings=settings, registry=registry or NodeRegistry(), hub=Hub(),
                          models=LazyModelManager(settings), load_packs=registry is None,
                          web_root=root)
    for module in ROUTE_MODULES:
        for route in module.routes:
            for prefix in ("", "/api"):
                app.router.add_route(route.method, prefix + route.path, route.handler)
    app.router.add_get("/{path:.+}", web_pages.static_route(root))
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_close_websockets)
    return app


def make_runner(app: web.Application, **kwargs) -> web.AppRunner:
    """The runner to serve ``app`` with. aiohttp has no header timeout of its own, but its
    keep-alive timer closes a connection that is waiting for a complete request: with it set
    to --request-timeout, half-sent headers are dropped (bodies: see ``read_body``). After a
    response to a request whose body was not all read (a 408, a 413), aiohttp reads and drops
    the rest for its "lingering" time (10 s) before closing: a client known to have stalled
    for --request-timeout gets no longer than that."""
    timeout = app[STATE].settings.request_timeout_s
    return web.AppRunner(app, keepalive_timeout=timeout, lingering_time=min(timeout, 10.0), **kwargs)


def load_node_packs(state: AppState) -> None:
    from loom.nodeapi.loader import load_packs

    settings = state.settings
    infos = load_packs(state.registry, settings.builtin_nodes_dir, builtin=True)
    if settings.disable_custom_nodes:
        log.info("Custom nodes are disabled (--disable-custom-nodes)")
    else:
        infos += load_packs(state.registry, settings.custom_nodes_dir, builtin=False)
    failed = [i for i in infos if i.error]
    log.info("Node packs: %d loaded, %d failed; %d node types", len(infos) - len(failed),
             len(failed), len(state.registry.classes))
    for info in failed:
        log.error("Pack %s failed to load (see the traceback above): %s", info.name,
                  info.error.strip().splitlines()[-1] if info.error else "")


def make_workers(state: AppState) -> WorkerPool:
    settings = state.settings
    count = max(1, settings.workers)
    model_ram_mb = settings.cache_max_model_ram_mb
    if model_ram_mb is None:
        import psutil

        model_ram_mb = psutil.virtual_memory().total // 2 // 2**20
    workers = []
    for i in range(count):
        # The RAM budget is the server's: each worker's cache gets its share.
        cache = OutputCache(max_entries=settings.cache_max_entries,
                            max_bytes=settings.cache_max_ram_mb * 2**20 // count,
                            max_model_bytes=model_ram_mb * 2**20 // count)
        workers.append(Worker(f"worker-{i}", state.store.queue, state.registry,
                              sink=state.hub.post_threadsafe, cache=cache,
                              folders=settings.folders, models=state.models, settings=settings,
                              preview_audience=state.hub.wants_previews))
    return WorkerPool(workers)


async def _lifecycle(app: web.Application):
    state = app[STATE]
    settings = state.settings
    state.hub.bind(asyncio.get_running_loop())
    settings.folders.create()
    if state.load_packs:
        load_node_packs(state)
    if state.registry.warm_ups:
        from loom.nodeapi.loader import run_warm_ups

        # Heavy imports once, off the event loop, before the first request or worker.
        await asyncio.to_thread(run_warm_ups, state.registry)
    store = Store(settings.database_path, history_max_items=settings.history_max_items,
                  exclusive=True, reset_damaged=settings.reset_damaged_db)
    state.store = store
    # Only now, holding the store's exclusive lock: a second server must not wipe our previews.
    if removed := settings.folders.clear_temp():
        log.info("Emptied the temp folder (%d previews of an earlier session)", removed)
    store.queue.add_listener(state.hub.status_changed_threadsafe)
    state.hub.status_source = lambda: {"exec_info": {"queue_remaining": store.queue.count()}}
    if removed := await asyncio.to_thread(settings.folders.remove_stale_temp_files):
        log.info("Removed %d half-written file(s) an earlier run left in output/ or input/",
                 removed)
    # Prompts a crash interrupted run again, without the files their killed run wrote.
    store.queue.recover(remove_file=settings.folders.remove_output_file)
    state.workers = make_workers(state)
    state.workers.start()
    state.started = time.time()
    log.info("Store at %s; %d prompt(s) queued; %d worker(s)", settings.database_path,
             store.queue.count(), len(state.workers.workers))
    try:
        yield
    finally:
        await asyncio.to_thread(state.workers.stop)
        store.close()


async def _close_websockets(app: web.Application) -> None:
    await app[STATE].hub.close_all()

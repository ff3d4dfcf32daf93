"""``/jobs``: the queue and history as one paged list of jobs (ComfyUI's jobs API).

``GET /jobs?status=pending,in_progress,completed,failed,cancelled&limit=&offset=&sort_order=``
(``limit`` 100 by default, at most 1000) answers
``{"jobs": [...], "pagination": {"offset", "limit", "total", "has_more"}}`` (the item shape is
in :mod:`loom.store.jobs`); ``GET /jobs/{id}`` is one job with its prompt and outputs;
``POST /jobs/{id}/cancel`` and ``POST /jobs/cancel`` (``{"job_ids": [...]}``) take a pending job
out of the queue and interrupt a running one. Cancelling a finished job changes nothing.
"""

from __future__ import annotations

from aiohttp import web

from loom.server.routes._common import bad_request, json_body, not_found, query_int, str_list
from loom.server.state import AppState, get_state
from loom.store.jobs import JOB_STATUSES

routes = web.RouteTableDef()

# A page: every listed job's history entry is decoded, so a client cannot ask for all at once.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
SORT_KEYS = ("create_time", "created_at")


def _statuses(request: web.Request) -> set[str] | None:
    raw = request.query.get("status")
    if raw is None or not raw.strip():
        return None
    statuses = {s.strip() for s in raw.split(",") if s.strip()}
    unknown = statuses - set(JOB_STATUSES)
    if unknown:
        raise bad_request(f"unknown job status {sorted(unknown)[0]!r}; use any of "
                          f"{', '.join(JOB_STATUSES)}")
    return statuses


@routes.get("/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    statuses = _statuses(request)
    limit = min(query_int(request, "limit", DEFAULT_LIMIT, minimum=1), MAX_LIMIT)
    offset = query_int(request, "offset", 0)
    sort_by = request.query.get("sort_by", "create_time")
    if sort_by not in SORT_KEYS:
        raise bad_request(f"jobs can be sorted by create_time only, not {sort_by!r}")
    order = request.query.get("sort_order", request.query.get("order", "desc")).lower()
    if order not in ("asc", "desc"):
        raise bad_request(f"sort_order must be asc or desc, not {order!r}")
    jobs, total = get_state(request).store.jobs.listing(statuses, limit, offset,
                                                        descending=order == "desc")
    return web.json_response({"jobs": jobs, "pagination": {
        "offset": offset, "limit": limit, "total": total,
        "has_more": offset + len(jobs) < total}})


@routes.get("/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    job = get_state(request).store.jobs.detail(job_id)
    if job is None:
        raise not_found(f"No job {job_id!r} in the queue or the history")
    return web.json_response(job)


def cancel(state: AppState, job_id: str) -> str | None:
    """Cancel a job; returns the status it had (None: no such job)."""
    status = state.store.jobs.status(job_id)
    if status in ("pending", "in_progress"):
        # A pending job may be claimed between the two calls: then it is interrupted.
        if not state.store.queue.delete_pending([job_id]):
            state.workers.interrupt(job_id)
    return status


@routes.post("/jobs/{job_id}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    status = cancel(get_state(request), job_id)
    if status is None:
        raise not_found(f"No job {job_id!r} in the queue or the history")
    return web.json_response({"id": job_id, "cancelled": status in ("pending", "in_progress")})


@routes.post("/jobs/cancel")
async def cancel_jobs(request: web.Request) -> web.Response:
    data = await json_body(request)
    job_ids = str_list(data, "job_ids")
    if job_ids is None:
        raise bad_request("'job_ids' is required: a list of job ids")
    state = get_state(request)
    cancelled, unknown = [], []
    for job_id in job_ids:
        status = cancel(state, job_id)
        if status is None:
            unknown.append(job_id)
        elif status in ("pending", "in_progress"):
            cancelled.append(job_id)
    return web.json_response({"cancelled": cancelled, "not_found": unknown})

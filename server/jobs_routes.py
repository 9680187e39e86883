"""ComfyUI's jobs API (#20; its frontend's queue and assets panels): GET /jobs lists the running, pending and
finished prompts as jobs (status filter, workflow filter, sorting, offset/limit pagination), GET /jobs/{job_id}
gives one with its outputs. Translation only: the jobs are built by `app.jobs` from the prompt store."""
from __future__ import annotations

from aiohttp import web

from app import jobs
from server.requests import in_thread
from server.state import STATE


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def _integer(query: dict, name: str) -> int | None:
    """The query's integer `name`, None when absent; ValueError naming it when not an integer."""
    if name not in query:
        return None
    try:
        return int(query[name])
    except ValueError:
        raise ValueError(f"{name} must be an integer") from None


async def list_jobs(request: web.Request) -> web.Response:
    query = request.rel_url.query
    statuses = None
    if query.get("status"):
        statuses = [status.strip().lower() for status in query["status"].split(",") if status.strip()]
        invalid = [status for status in statuses if status not in jobs.STATUSES]
        if invalid:
            return _bad(f"Invalid status value(s): {', '.join(invalid)}. Valid values: {', '.join(jobs.STATUSES)}")
    sort_by = query.get("sort_by", "created_at").lower()
    if sort_by not in jobs.SORT_FIELDS:
        return _bad("sort_by must be 'created_at' or 'execution_duration'")
    sort_order = query.get("sort_order", "desc").lower()
    if sort_order not in ("asc", "desc"):
        return _bad("sort_order must be 'asc' or 'desc'")
    try:
        limit, offset = _integer(query, "limit"), _integer(query, "offset")
    except ValueError as error:
        return _bad(str(error))
    if limit is not None and limit <= 0:
        return _bad("limit must be a positive integer")
    offset = max(offset or 0, 0)
    store = request.app[STATE].store

    def page() -> tuple[list, int]:
        return jobs.list_jobs(store.running(), store.pending(), store.history(), statuses,
                              query.get("workflow_id"), sort_by, sort_order, limit, offset)

    found, total = await in_thread(page)
    return web.json_response({"jobs": found, "pagination": {"offset": offset, "limit": limit, "total": total,
                                                            "has_more": offset + len(found) < total}})


async def get_job(request: web.Request) -> web.Response:
    store = request.app[STATE].store
    job_id = request.match_info["job_id"]
    job = await in_thread(lambda: jobs.find_job(job_id, store.running(), store.pending(),
                                                store.history_item(job_id)))
    if job is None:
        return web.json_response({"error": "Job not found"}, status=404)
    return web.json_response(job)


ROUTES = [
    web.get("/jobs", list_jobs),
    web.get("/jobs/{job_id}", get_job),
]

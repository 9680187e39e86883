"""ComfyUI's jobs view of the queue and the history (what its frontend's queue and assets panels and GET /api/jobs
read): one job per prompt, with a status (pending, in_progress, completed, failed, cancelled), its creation and
execution times, how many outputs it made and which one previews it. Built from the prompt store's queue items and
history entries on each request; nothing is stored twice. Knows nothing of HTTP.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from app.prompt_store import QueueItem

PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED = "pending", "in_progress", "completed", "failed", "cancelled"
STATUSES = (PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED)
SORT_FIELDS = ("created_at", "execution_duration")

# output kinds ComfyUI's frontend previews, and file endings it previews whatever the kind
_PREVIEW_KINDS = frozenset({"images", "video", "audio", "3d", "text"})
_MODEL_ENDINGS = (".obj", ".fbx", ".gltf", ".glb", ".usdz")
_TEXT_ENDINGS = (".txt", ".md", ".json")
TEXT_PREVIEW_LIMIT = 1024  # characters of a text output shown as a job's preview


def _without_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _job_facts(extra_data: Mapping[str, Any]) -> tuple[Any, Any]:
    """(create_time in ms, the editor workflow's id) that POST /prompt recorded."""
    workflow = (extra_data.get("extra_pnginfo") or {}).get("workflow") or {}
    return extra_data.get("create_time"), workflow.get("id") if isinstance(workflow, Mapping) else None


def queued_job(item: QueueItem, status: str, include_workflow: bool = False) -> dict[str, Any]:
    """The job of a prompt still in the queue (pending or in progress): no outputs yet."""
    create_time, workflow_id = _job_facts(item.extra_data)
    number = int(item.number) if float(item.number).is_integer() else item.number
    job = _without_none({"id": item.prompt_id, "status": status, "priority": number, "create_time": create_time,
                         "outputs_count": 0, "previewable_outputs_count": 0, "workflow_id": workflow_id})
    if include_workflow:
        job["workflow"] = {"prompt": item.prompt, "extra_data": item.extra_data}
    return job


def _model_file_item(item: Any) -> dict[str, Any] | None:
    """A bare file name of a 3-D model output as ComfyUI lists it ({filename, type, subfolder, mediaType})."""
    if isinstance(item, str) and item.lower().endswith(_MODEL_ENDINGS):
        return {"filename": item, "type": "output", "subfolder": "", "mediaType": "3d"}
    return None


def _previewable(kind: str, item: Mapping[str, Any]) -> bool:
    if kind in _PREVIEW_KINDS:
        return True
    media = str(item.get("format", ""))
    name = str(item.get("filename", "")).lower()
    return media.startswith(("video/", "audio/")) or name.endswith(_MODEL_ENDINGS + _TEXT_ENDINGS)


def _is_text(kind: str, item: Mapping[str, Any]) -> bool:
    return kind == "text" or str(item.get("filename", "")).lower().endswith(_TEXT_ENDINGS)


def _output_items(outputs: Mapping[str, Any]) -> Iterable[tuple[str, str, Any]]:
    """(node id, output kind, item) of every listed output item ("animated" is a flag, not items)."""
    for node_id, node_outputs in outputs.items():
        if not isinstance(node_outputs, Mapping):
            continue
        for kind, items in node_outputs.items():
            if kind != "animated" and isinstance(items, list):
                for item in items:
                    yield node_id, kind, item


def outputs_summary(outputs: Mapping[str, Any]) -> tuple[int, int, dict[str, Any] | None]:
    """(outputs count, previewable outputs count, the preview) of a prompt's outputs, as ComfyUI picks the
    preview: a saved visual output first, else another visual one (a preview image), else a saved text file, else
    a text output's first characters. Text values are previews only, not counted as outputs."""
    count = previewable = 0
    saved = other = text_file = text = None
    for node_id, kind, item in _output_items(outputs):
        if not isinstance(item, Mapping):
            file_item = _model_file_item(item)
            if file_item is None:
                if kind == "text" and text is None and item is not None:
                    value = item[0] if isinstance(item, tuple) and item else str(item)
                    text = _without_none({"content": value[:TEXT_PREVIEW_LIMIT],
                                          "truncated": True if len(value) > TEXT_PREVIEW_LIMIT else None,
                                          "nodeId": node_id, "mediaType": kind})
                continue
            item = file_item
        count += 1
        if not _previewable(kind, item):
            continue
        previewable += 1
        described = {**item, "nodeId": node_id, "mediaType": item.get("mediaType", kind)}
        if _is_text(kind, item):
            text_file = text_file or described
        elif item.get("type") == "output":
            saved = saved or described
        else:
            other = other or described
    return count, previewable, saved or other or text_file or text


def _normalized_outputs(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Outputs as the job detail lists them: 3-D file names as file items, None items left out."""
    normalized: dict[str, Any] = {}
    for node_id, node_outputs in outputs.items():
        if not isinstance(node_outputs, Mapping):
            normalized[node_id] = node_outputs
            continue
        normalized[node_id] = {kind: [_model_file_item(item) or item for item in items if item is not None]
                               if kind != "animated" and isinstance(items, list) else items
                               for kind, items in node_outputs.items()}
    return normalized


def history_job(prompt_id: str, entry: Mapping[str, Any], include_outputs: bool = False) -> dict[str, Any]:
    """The job of a finished prompt from its history entry: completed, failed, or cancelled (interrupted), with its
    execution times and error from the entry's status messages."""
    number, _, prompt, extra_data, _ = entry["prompt"]
    create_time, workflow_id = _job_facts(extra_data)
    status_info = entry.get("status") or {}
    started = ended = error = None
    interrupted = False
    for message in status_info.get("messages", []):
        if not (isinstance(message, (list, tuple)) and len(message) >= 2 and isinstance(message[1], Mapping)):
            continue
        name, data = message[0], message[1]
        if name == "execution_start":
            started = data.get("timestamp")
        elif name in ("execution_success", "execution_error", "execution_interrupted"):
            ended = data.get("timestamp")
            error = data if name == "execution_error" else error
            interrupted = interrupted or name == "execution_interrupted"
    status = COMPLETED
    if status_info.get("status_str") == "error":
        status = CANCELLED if interrupted else FAILED
    outputs = entry.get("outputs") or {}
    count, previewable, preview = outputs_summary(outputs)
    job = _without_none({"id": prompt_id, "status": status, "priority": number, "create_time": create_time,
                         "execution_start_time": started, "execution_end_time": ended, "execution_error": error,
                         "outputs_count": count, "previewable_outputs_count": previewable,
                         "preview_output": preview, "workflow_id": workflow_id})
    if include_outputs:
        job.update(outputs=_normalized_outputs(outputs), execution_status=status_info,
                   workflow={"prompt": prompt, "extra_data": extra_data})
    return job


def _sort_key(sort_by: str) -> Any:
    if sort_by == "execution_duration":
        def duration(job: Mapping[str, Any]) -> float:
            start, end = job.get("execution_start_time"), job.get("execution_end_time")
            return end - start if start and end else 0
        return duration
    return lambda job: job.get("create_time") or 0


def list_jobs(running: Iterable[QueueItem], pending: Iterable[QueueItem],
              history: Mapping[str, Mapping[str, Any]], statuses: Iterable[str] | None = None,
              workflow_id: str | None = None, sort_by: str = "created_at", sort_order: str = "desc",
              limit: int | None = None, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """(one page of jobs, how many jobs match) of the running, pending and finished prompts with one of
    `statuses` (all by default) and the editor workflow `workflow_id` (any by default), sorted by creation time or
    execution duration."""
    wanted = set(STATUSES if statuses is None else statuses)
    jobs = []
    if IN_PROGRESS in wanted:
        jobs += [queued_job(item, IN_PROGRESS) for item in running]
    if PENDING in wanted:
        jobs += [queued_job(item, PENDING) for item in pending]
    if wanted & {COMPLETED, FAILED, CANCELLED}:
        jobs += [job for job in (history_job(prompt_id, entry) for prompt_id, entry in history.items())
                 if job["status"] in wanted]
    if workflow_id:
        jobs = [job for job in jobs if job.get("workflow_id") == workflow_id]
    jobs.sort(key=_sort_key(sort_by), reverse=sort_order == "desc")
    page = jobs[offset:] if limit is None else jobs[offset:offset + limit]
    return page, len(jobs)


def find_job(prompt_id: str, running: Iterable[QueueItem], pending: Iterable[QueueItem],
             history: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """The full job of one prompt (its outputs and workflow too), finished or queued; None when unknown."""
    if prompt_id in history:
        return history_job(prompt_id, history[prompt_id], include_outputs=True)
    for items, status in ((running, IN_PROGRESS), (pending, PENDING)):
        for item in items:
            if item.prompt_id == prompt_id:
                return queued_job(item, status, include_workflow=True)
    return None

"""The jobs view of the queue and history (app/jobs.py): statuses, times, output counts, the preview ComfyUI's
frontend shows, filters, sorting and pages."""
from app import jobs
from app.prompt_store import QueueItem


def queued(prompt_id: str, number: float, create_time: int | None = None, workflow_id: str | None = None):
    extra = {"create_time": create_time} if create_time is not None else {}
    if workflow_id is not None:
        extra["extra_pnginfo"] = {"workflow": {"id": workflow_id}}
    return QueueItem(number, prompt_id, {"1": {"class_type": "X", "inputs": {}}}, extra, ["1"], None)


def finished(item: QueueItem, outputs: dict, status: str = "success", events=()):
    messages = [["execution_start", {"prompt_id": item.prompt_id, "timestamp": 1000}], *events]
    return {"prompt": item.as_list(), "outputs": outputs, "meta": {},
            "status": {"status_str": status, "completed": status == "success", "messages": messages}}


SAVED = {"filename": "a.png", "subfolder": "", "type": "output"}
PREVIEW = {"filename": "p.png", "subfolder": "", "type": "temp"}


def test_a_finished_job_counts_its_outputs_and_previews_a_saved_image_first():
    item = queued("p1", 3, create_time=5)
    outputs = {"7": {"images": [PREVIEW]}, "9": {"images": [SAVED], "animated": [False]},
               "4": {"text": ["hello"]}, "5": {"latents": [{"filename": "x.latent", "type": "output"}]}}
    entry = finished(item, outputs, events=[["execution_success", {"timestamp": 1500}]])
    job = jobs.history_job("p1", entry)
    assert job == {"id": "p1", "status": "completed", "priority": 3, "create_time": 5, "execution_start_time": 1000,
                   "execution_end_time": 1500, "outputs_count": 3, "previewable_outputs_count": 2,
                   "preview_output": {**SAVED, "nodeId": "9", "mediaType": "images"}}
    detailed = jobs.history_job("p1", entry, include_outputs=True)
    assert detailed["outputs"] == outputs and detailed["workflow"]["extra_data"] == {"create_time": 5}
    assert detailed["execution_status"]["status_str"] == "success"


def test_previews_fall_back_to_temp_images_then_text_files_then_text():
    item = queued("p", 1)
    assert jobs.outputs_summary({"1": {"images": [PREVIEW]}})[2]["filename"] == "p.png"
    text_file = {"filename": "notes.txt", "subfolder": "", "type": "output"}
    assert jobs.outputs_summary({"1": {"files": [text_file]}, "2": {"text": ["words"]}})[2]["filename"] == "notes.txt"
    count, previewable, preview = jobs.outputs_summary({"2": {"text": ["x" * 2000]}})
    assert (count, previewable) == (0, 0)
    assert preview == {"content": "x" * jobs.TEXT_PREVIEW_LIMIT, "truncated": True, "nodeId": "2", "mediaType": "text"}
    model = jobs.history_job("p", finished(item, {"3": {"3d": ["mesh.glb"]}}), include_outputs=True)
    assert model["outputs"]["3"]["3d"] == [{"filename": "mesh.glb", "type": "output", "subfolder": "",
                                            "mediaType": "3d"}]
    assert model["preview_output"]["mediaType"] == "3d" and model["outputs_count"] == 1


def test_failed_and_cancelled_jobs():
    error = {"prompt_id": "f", "node_id": "1", "exception_message": "boom", "timestamp": 2000}
    failed = jobs.history_job("f", finished(queued("f", 1), {}, "error", [["execution_error", error]]))
    assert failed["status"] == "failed" and failed["execution_error"] == error and failed["execution_end_time"] == 2000
    stopped = jobs.history_job("c", finished(queued("c", 2), {}, "error",
                                             [["execution_interrupted", {"timestamp": 3000}]]))
    assert stopped["status"] == "cancelled" and "preview_output" not in stopped


def test_listing_filters_sorts_and_pages():
    running, pending = [queued("r", 1, create_time=30)], [queued("q1", 2, create_time=40), queued("q2", 2.5)]
    history = {"h1": finished(queued("h1", 0, create_time=10, workflow_id="w"), {}),
               "h2": finished(queued("h2", 0.5, create_time=20), {}, "error")}
    everything, total = jobs.list_jobs(running, pending, history)
    assert total == 5 and [job["id"] for job in everything] == ["q1", "r", "h2", "h1", "q2"]  # newest first
    assert [job["status"] for job in everything[:3]] == ["pending", "in_progress", "failed"]
    oldest, _ = jobs.list_jobs(running, pending, history, sort_order="asc")
    assert [job["id"] for job in oldest] == ["q2", "h1", "h2", "r", "q1"]
    page, total = jobs.list_jobs(running, pending, history, limit=2, offset=1)
    assert [job["id"] for job in page] == ["r", "h2"] and total == 5
    done, total = jobs.list_jobs(running, pending, history, statuses=["completed", "failed"])
    assert {job["id"] for job in done} == {"h1", "h2"} and total == 2
    assert [job["id"] for job in jobs.list_jobs(running, pending, history, workflow_id="w")[0]] == ["h1"]


def test_finding_one_job():
    running, pending = [queued("r", 1)], [queued("q", 2)]
    history = {"h": finished(queued("h", 0), {"1": {"images": [SAVED]}})}
    assert jobs.find_job("h", running, pending, history)["outputs"] == {"1": {"images": [SAVED]}}
    assert jobs.find_job("r", running, pending, history)["status"] == "in_progress"
    assert jobs.find_job("q", running, pending, history)["workflow"]["prompt"]["1"]["class_type"] == "X"
    assert jobs.find_job("nope", running, pending, history) is None

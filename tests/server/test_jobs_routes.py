"""GET /api/jobs and /api/jobs/{id} (#20) over real prompts: ComfyUI's shapes, filters, pages and status codes."""
from tests.server.conftest import wait_for_history
from tests.server.test_routes import CHAIN


async def test_jobs_list_the_prompts_that_ran(client):
    ids = []
    for value in (2, 5):
        prompt = {**CHAIN, "1": {"class_type": "Const", "inputs": {"value": value}}}
        response = await client.post("/prompt", json={"prompt": prompt, "extra_data": {
            "extra_pnginfo": {"workflow": {"id": f"wf-{value}"}}}})
        ids.append((await response.json())["prompt_id"])
        entry = await wait_for_history(client, ids[-1])
        assert isinstance(entry["prompt"][3]["create_time"], int)  # recorded by POST /prompt, as ComfyUI does
    body = await (await client.get("/api/jobs")).json()
    assert [job["id"] for job in body["jobs"]] == ids[::-1]  # newest first
    assert body["pagination"] == {"offset": 0, "limit": None, "total": 2, "has_more": False}
    job = body["jobs"][0]
    assert job["status"] == "completed" and job["workflow_id"] == "wf-5" and job["outputs_count"] == 0
    assert job["execution_start_time"] <= job["execution_end_time"]
    page = await (await client.get("/jobs", params={"limit": "1", "offset": "1", "sort_order": "asc"})).json()
    assert [job["id"] for job in page["jobs"]] == [ids[1]] and page["pagination"]["has_more"] is False
    first = await (await client.get("/api/jobs", params={"limit": "1"})).json()
    assert first["pagination"]["has_more"] is True
    assert (await (await client.get("/api/jobs", params={"status": "pending,in_progress"})).json())["jobs"] == []
    filtered = await (await client.get("/api/jobs", params={"workflow_id": "wf-2"})).json()
    assert [job["id"] for job in filtered["jobs"]] == [ids[0]]

    detail = await (await client.get(f"/api/jobs/{ids[0]}")).json()
    assert detail["outputs"] == {"3": {"values": [5]}}
    assert detail["workflow"]["prompt"]["1"]["inputs"] == {"value": 2}
    missing = await client.get("/api/jobs/no-such-job")
    assert missing.status == 404 and await missing.json() == {"error": "Job not found"}


async def test_bad_job_queries_are_400_with_a_reason(client):
    for params, reason in (({"status": "done"}, "Invalid status value(s): done"),
                           ({"sort_by": "name"}, "sort_by must be"), ({"sort_order": "up"}, "sort_order must be"),
                           ({"limit": "0"}, "limit must be a positive integer"),
                           ({"limit": "x"}, "limit must be an integer"), ({"offset": "x"}, "offset must be an integer")):
        response = await client.get("/api/jobs", params=params)
        assert response.status == 400 and reason in (await response.json())["error"], params

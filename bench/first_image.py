"""Start-up to first image: `python main.py` in a fresh process on empty folders, then the shipped default
text-to-image workflow (`workflows/txt2img.json`: the demo checkpoint, 512x512, 20 euler steps, cfg 8) posted as
soon as the server accepts it (or a few seconds after launch, as a person would). Times are from launching the
process: HTTP answering, the prompt accepted, `/object_info` ready (the nodes loaded in the background), the first
image in `/history`, and from accepting the prompt to its image (the worker imports the model libraries while it
waits for its first prompt). The first start writes the demo models; later ones find them. Each row is the median
over `--repeats` launches.
Run: `OMP_NUM_THREADS=1 .venv/bin/python -m bench.first_image [--repeats 3]`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
WORKFLOW = PROJECT_DIR / "workflows" / "txt2img.json"
TIMEOUT_S = 300.0
LATER_QUEUE_S = 6.0  # as a person would: open the page, look, press Queue


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> Any | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return None


def _post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _wait(condition: Any, began: float, what: str) -> float:
    while time.perf_counter() - began < TIMEOUT_S:
        if condition():
            return time.perf_counter() - began
        time.sleep(0.02)
    raise TimeoutError(f"{what} not within {TIMEOUT_S} s")


def one_start(base: Path, queue_after: float = 0.0) -> dict[str, float]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "main.py", "--port", str(port), "--models-dir", str(base / "models"),
               "--output-dir", str(base / "output"), "--input-dir", str(base / "input"),
               "--temp-dir", str(base / "temp"), "--user-dir", str(base / "user"), "--disable-custom-nodes"]
    began = time.perf_counter()
    process = subprocess.Popen(command, cwd=PROJECT_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        http = _wait(lambda: _get(f"{url}/queue") is not None, began, "HTTP")
        time.sleep(max(0.0, queue_after - (time.perf_counter() - began)))
        prompt = json.loads(WORKFLOW.read_text())
        prompt_id = None

        def accepted() -> bool:  # 503 while the engine is still loading in the background
            nonlocal prompt_id
            status, body = _post(f"{url}/prompt", {"prompt": prompt})
            if status == 200:
                prompt_id = body["prompt_id"]
                return True
            return False

        queued = _wait(accepted, began, "POST /prompt accepted")
        object_info = _wait(lambda: _get(f"{url}/object_info") is not None, began, "/object_info")

        def image_saved() -> bool:
            entry = (_get(f"{url}/history/{prompt_id}") or {}).get(prompt_id)
            if entry and entry.get("status", {}).get("status_str") == "error":
                raise RuntimeError(f"the workflow failed: {entry['status']}")
            return bool(entry and entry.get("outputs", {}).get("9", {}).get("images"))

        first_image = _wait(image_saved, began, "first image")
        return {"http": http, "queued": queued, "object_info": object_info, "first_image": first_image,
                "queue_to_image": first_image - queued}
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {
        "first start (writes demo models)": [], "later start": [], f"later start, queued at {LATER_QUEUE_S:g} s": []}
    for _ in range(args.repeats):
        base = Path(tempfile.mkdtemp(prefix="first_image_"))
        try:
            rows["first start (writes demo models)"].append(one_start(base))
            rows["later start"].append(one_start(base))
            rows[f"later start, queued at {LATER_QUEUE_S:g} s"].append(one_start(base, LATER_QUEUE_S))
        finally:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\nseconds from launching `python main.py` (median of {args.repeats}); workflow: "
          f"{WORKFLOW.relative_to(PROJECT_DIR)} (512x512, 20 steps)")
    columns = ("http", "queued", "object_info", "first_image", "queue_to_image")
    print(f"  {'':<34}" + "".join(f"{name:>15}" for name in columns))
    for label, measurements in rows.items():
        print(f"  {label:<34}" + "".join(f"{statistics.median(m[c] for m in measurements):>15.2f}"
                                          for c in columns))


if __name__ == "__main__":
    main()

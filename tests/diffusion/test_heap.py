"""The server's heap keeps freed blocks for reuse while a prompt runs, in the prompt's thread too (no fresh pages
for each step's activations), counts them as free memory, and gives them back to the OS between prompts. The
settings are process-wide, so each check runs in a fresh Python."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffusion import heap, memory

PROJECT_DIR = Path(__file__).resolve().parents[2]
glibc_only = pytest.mark.skipif(heap._glibc() is None, reason="glibc's malloc settings")

# in a thread of its own, as the server runs a prompt: allocate, touch and free a 128 MiB block, then four smaller
# ones (each above glibc's largest dynamic mmap threshold, 32 MiB, and a thread arena's 64 MiB heaps, so by default
# each is a fresh map whose pages fault in); print the page faults of those four, the heap's reusable bytes, and
# the resident memory before and after handing the freed blocks back
PROBE = """
import resource, sys, threading
from diffusion import heap
if sys.argv[1] == "reuse":
    assert heap.share_one_arena() and heap.keep_freed_blocks_for_reuse()
import torch
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
counted = []
def allocate():
    torch.ones(32 * 1024 * 1024).sum()  # 128 MiB, freed at once
    start = faults()
    for mebibytes in (120, 104, 88, 72):  # as a step's activations come and go: each fits where the first was
        torch.ones(mebibytes * 256 * 1024).sum()
    counted.append(faults() - start)
thread = threading.Thread(target=allocate)
thread.start()
thread.join()
held = resident()
reusable = heap.reusable_free_bytes()
heap.return_freed_blocks()
print(counted[0], reusable, held - resident())
"""


def _probe(mode: str) -> tuple[int, int, int]:
    result = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=PROJECT_DIR, capture_output=True, text=True,
                            timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    faults, reusable, returned = (int(value) for value in result.stdout.split())
    return faults, reusable, returned


@glibc_only
def test_freed_blocks_are_reused_and_then_returned_to_the_os():
    pages = (120 + 104 + 88 + 72) * 1024 * 1024 // 4096
    faults, _, _ = _probe("default")
    assert faults >= pages * 0.9  # each block mapped anew
    faults, reusable, returned = _probe("reuse")
    assert faults < pages * 0.05  # the first block's pages, reused
    assert reusable >= 128 * 1024 * 1024
    assert returned >= 120 * 1024 * 1024


def test_cpu_free_memory_counts_the_reusable_heap(monkeypatch):
    monkeypatch.setattr(heap, "reusable_free_bytes", lambda: 0)
    without = memory.free_memory_bytes(torch.device("cpu"))
    monkeypatch.setattr(heap, "reusable_free_bytes", lambda: 1 << 40)
    assert memory.free_memory_bytes(torch.device("cpu")) - without >= (1 << 40) - (1 << 30)  # RAM may move a bit

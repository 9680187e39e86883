"""The C heap that CPU tensors live in: keep freed blocks for reuse while a prompt runs, count them as free
memory, and hand them back to the OS when a prompt ends.

glibc's malloc serves blocks above its mmap threshold (at most 32 MiB, adjusted as the process goes) with fresh
`mmap`s and unmaps them when they are freed; a thread other than the main one allocates from an arena of its own,
made of 64 MiB heaps, which maps anything larger afresh whatever the threshold. A denoising step on the CPU frees
and allocates hundreds of MB of activations, so every step paid for the kernel's mapping and zeroing of them
anew, and the server runs each prompt in a thread of its own. A real-size SD1.5 UNet step (256x256, 2 threads,
in a thread) took 83,000 page faults in bf16 and 465,000 in fp32; with one arena for every thread and freed blocks
kept for reuse, none, and 8-18% less time (`bench/heap.py`, README). The blocks kept are returned to the OS
(`malloc_trim`) when each prompt ends, so an idle server holds no more than before. Other C libraries (macOS,
musl, Windows) are left as they are.
"""
from __future__ import annotations

import ctypes
import functools
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
# Blocks up to this size come from the heap and are reused once freed (larger ones, rarer, still get maps of
# their own); free memory at the top of the heap is given back to the OS by free() itself only beyond this.
REUSE_BELOW_BYTES = 1 << 30


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        library = ctypes.CDLL(None)  # the process's own symbols, the C library's among them (no search for it)
        library.gnu_get_libc_version.restype = ctypes.c_char_p
        library.mallinfo2.restype = _MallInfo2
        library.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        library.malloc_trim.argtypes = (ctypes.c_size_t,)
    except (OSError, AttributeError, TypeError):  # not glibc, or glibc before 2.33 (no mallinfo2); Windows
        return None
    return library


def share_one_arena() -> bool:
    """Make every thread allocate from the main arena, whose heap grows as needed (glibc's M_ARENA_MAX=1), so
    that a prompt's thread reuses large blocks too. Only threads that have not allocated yet follow it: call it
    before the process starts any. Returns whether it was applied (glibc only). The server's threads seldom
    allocate at the same moment, so sharing one lock cost nothing measurable (`bench/heap.py`)."""
    library = _glibc()
    return library is not None and library.mallopt(M_ARENA_MAX, 1) == 1


def keep_freed_blocks_for_reuse() -> bool:
    """Make freed blocks up to `REUSE_BELOW_BYTES` stay in the heap for the next allocation (process-wide, from
    now on). Returns whether it was applied (glibc only)."""
    library = _glibc()
    if library is None:
        return False
    applied = (library.mallopt(M_MMAP_THRESHOLD, REUSE_BELOW_BYTES) == 1
               and library.mallopt(M_TRIM_THRESHOLD, REUSE_BELOW_BYTES) == 1)
    if not applied:
        log.warning("glibc %s refused the malloc settings; CPU steps map fresh memory each time",
                    library.gnu_get_libc_version().decode())
    return applied


def reusable_free_bytes() -> int:
    """Bytes that freed blocks hold in the heap: this process reuses them before asking the OS for more, so
    they are free memory for it although the OS counts them as used (0 where unknown)."""
    library = _glibc()
    return int(library.mallinfo2().fordblks) if library is not None else 0


def return_freed_blocks() -> None:
    """Give the heap's free pages back to the OS (`malloc_trim`), e.g. when a prompt ends."""
    library = _glibc()
    if library is not None:
        library.malloc_trim(0)

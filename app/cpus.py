"""How many CPUs this process can keep busy: the torch thread count used when the user names none.

Torch's own default is the machine's physical core count. It ignores two limits a process often runs under: its
CPU affinity (`taskset`, a container's `--cpuset-cpus`, a batch scheduler's allocation) and its cgroup CPU quota
(a container's `--cpus`, a Kubernetes CPU limit). Threads beyond either limit add no compute: they are
time-sliced or throttled, and every parallel region waits for the slowest of them (`bench/threads.py` measures
it: see the README). So the count here is the physical cores among the CPUs the process may run on, at most
its quota rounded up to whole CPUs. Linux is read through /proc and /sys; elsewhere (or where they cannot be
read) the limit that cannot be read is left out.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

PROC = Path("/proc")
SYS_CPUS = Path("/sys/devices/system/cpu")


def usable_cpu_count(proc: Path = PROC, sys_cpus: Path = SYS_CPUS) -> int:
    """Physical cores among this process's allowed CPUs, at most its cgroup quota rounded up: a thread on a part
    of a CPU still pays (2 threads under a 1.25-CPU quota were 0.93x the time of 1, under 1.5 CPUs 0.80x), one
    beyond it does not (under 1 CPU, 2 threads took 1.19x the time of 1)."""
    cpus = allowed_cpus()
    count = physical_core_count(cpus, sys_cpus)
    quota = cgroup_cpu_quota(proc)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def allowed_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this platform
        return list(range(os.cpu_count() or 1))


def physical_core_count(cpus: list[int], sys_cpus: Path = SYS_CPUS) -> int:
    """How many distinct physical cores the given logical CPUs sit on (SMT siblings share one); each CPU whose
    topology cannot be read counts as a core of its own."""
    cores: set[str] = set()
    for cpu in cpus:
        topology = sys_cpus / f"cpu{cpu}" / "topology"
        siblings = _read(topology / "core_cpus_list") or _read(topology / "thread_siblings_list")
        cores.add(siblings or f"cpu{cpu}")
    return len(cores)


def cgroup_cpu_quota(proc: Path = PROC) -> float | None:
    """The CPUs this process's cgroup quota allows (1.5 for `docker --cpus=1.5`), the smallest along its cgroup's
    path up to the mounted root, cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`); None
    when there is no quota or it cannot be read."""
    membership = _read(proc / "self" / "cgroup")
    mounts = _read(proc / "self" / "mountinfo")
    if membership is None or mounts is None:
        return None
    quotas = []
    for line in membership.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        version2 = hierarchy == "0" and controllers == ""
        if not version2 and "cpu" not in controllers.split(","):
            continue
        for directory in _cgroup_directories(mounts, path, version2):
            quota = _quota_v2(directory) if version2 else _quota_v1(directory)
            if quota is not None:
                quotas.append(quota)
    return min(quotas, default=None)


def _cgroup_directories(mountinfo: str, path: str, version2: bool) -> list[Path]:
    """The directories of a cgroup and of its ancestors up to where its hierarchy is mounted. A container sees
    its own cgroup mounted as the root, while /proc/self/cgroup may still name the host's path for it."""
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        filesystem, _, options = line.split(" - ", 1)[1].partition(" ")
        options = options.split(" ")[-1].split(",")
        if filesystem != ("cgroup2" if version2 else "cgroup") or (not version2 and "cpu" not in options):
            continue
        root, mount_point = fields[3], Path(fields[4])
        relative = os.path.relpath(path, root) if _within(path, root) else "."
        directory = Path(os.path.normpath(mount_point / relative))
        chain = [directory]
        while directory != mount_point and mount_point in directory.parents:
            directory = directory.parent
            chain.append(directory)
        return chain
    return []


def _within(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def _quota_v2(directory: Path) -> float | None:
    parts = (_read(directory / "cpu.max") or "").split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    return _ratio(parts[0], parts[1])


def _quota_v1(directory: Path) -> float | None:
    return _ratio(_read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us"))


def _ratio(quota: str | None, period: str | None) -> float | None:
    try:
        quota_us, period_us = int(quota or ""), int(period or "")
    except ValueError:
        return None
    if quota_us <= 0 or period_us <= 0:  # -1: no quota
        return None
    return quota_us / period_us


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None

"""The default torch thread count: physical cores among the allowed CPUs, capped by the cgroup CPU quota. Each
test builds the /proc and /sys files a Linux machine or container shows."""
from pathlib import Path

import pytest

from app import cpus

V1_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
"""


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fake_proc(tmp_path: Path, membership: str, mountinfo: str) -> Path:
    proc = tmp_path / "proc"
    write(proc / "self" / "cgroup", membership)
    write(proc / "self" / "mountinfo", mountinfo.replace("/sys/fs/cgroup", str(tmp_path / "cgroup")))
    return proc


def fake_cpus(tmp_path: Path, siblings: dict[int, str]) -> Path:
    sys_cpus = tmp_path / "cpu"
    for cpu, listed in siblings.items():
        write(sys_cpus / f"cpu{cpu}" / "topology" / "core_cpus_list", listed + "\n")
    return sys_cpus


def test_smt_siblings_count_as_one_core(tmp_path):
    sys_cpus = fake_cpus(tmp_path, {0: "0,4", 1: "1,5", 2: "2,6", 3: "3,7", 4: "0,4", 5: "1,5", 6: "2,6", 7: "3,7"})
    assert cpus.physical_core_count(list(range(8)), sys_cpus) == 4
    assert cpus.physical_core_count([0, 4, 1], sys_cpus) == 2  # an affinity mask holding both siblings of core 0
    # older kernels name the file thread_siblings_list; a CPU with no topology counts as a core of its own
    write(sys_cpus / "cpu9" / "topology" / "thread_siblings_list", "9-10")
    assert cpus.physical_core_count([0, 9, 12], sys_cpus) == 3


def test_cgroup_v2_quota_is_read_along_the_path_and_the_smallest_wins(tmp_path):
    mounts = "30 23 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    proc = fake_proc(tmp_path, "0::/user.slice/job\n", mounts)
    write(tmp_path / "cgroup" / "user.slice" / "job" / "cpu.max", "max 100000\n")
    write(tmp_path / "cgroup" / "user.slice" / "cpu.max", "250000 100000\n")
    assert cpus.cgroup_cpu_quota(proc) == 2.5
    write(tmp_path / "cgroup" / "user.slice" / "job" / "cpu.max", "150000 100000\n")
    assert cpus.cgroup_cpu_quota(proc) == 1.5
    write(tmp_path / "cgroup" / "user.slice" / "job" / "cpu.max", "max 100000\n")
    write(tmp_path / "cgroup" / "user.slice" / "cpu.max", "max 100000\n")
    assert cpus.cgroup_cpu_quota(proc) is None


def test_cgroup_v1_quota_of_a_container_that_sees_its_cgroup_as_the_root(tmp_path):
    # the container's /proc/self/cgroup still names the host's path; its own cgroup is mounted at the root
    proc = fake_proc(tmp_path, "12:cpuset:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n",
                     V1_MOUNTS.replace("0:29 / ", "0:29 /docker/abc "))
    limits = tmp_path / "cgroup" / "cpu,cpuacct"
    write(limits / "cpu.cfs_quota_us", "400000\n")
    write(limits / "cpu.cfs_period_us", "100000\n")
    assert cpus.cgroup_cpu_quota(proc) == 4.0
    write(limits / "cpu.cfs_quota_us", "-1\n")
    assert cpus.cgroup_cpu_quota(proc) is None


def test_cgroup_v1_quota_of_a_child_cgroup(tmp_path):
    proc = fake_proc(tmp_path, "4:cpu,cpuacct:/batch/job7\n", V1_MOUNTS)
    job = tmp_path / "cgroup" / "cpu,cpuacct" / "batch" / "job7"
    write(job / "cpu.cfs_quota_us", "50000\n")
    write(job / "cpu.cfs_period_us", "100000\n")
    assert cpus.cgroup_cpu_quota(proc) == 0.5


def test_unreadable_or_garbled_files_mean_no_quota(tmp_path):
    assert cpus.cgroup_cpu_quota(tmp_path / "no-proc") is None
    mounts = "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    proc = fake_proc(tmp_path, "0::/\n", mounts)
    write(tmp_path / "cgroup" / "cpu.max", "lots\n")
    assert cpus.cgroup_cpu_quota(proc) is None


@pytest.mark.parametrize(("quota", "expected"), [(None, 4), ("100000 100000", 1), ("125000 100000", 2),
                                                 ("50000 100000", 1), ("300000 100000", 3), ("900000 100000", 4)])
def test_usable_count_is_physical_cores_capped_by_the_quota_rounded_up(tmp_path, monkeypatch, quota, expected):
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    sys_cpus = fake_cpus(tmp_path, {cpu: f"{cpu % 4},{cpu % 4 + 4}" for cpu in range(8)})
    proc = fake_proc(tmp_path, "0::/\n", "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    if quota is not None:
        write(tmp_path / "cgroup" / "cpu.max", quota)
    assert cpus.usable_cpu_count(proc, sys_cpus) == expected


def test_usable_count_follows_the_affinity_mask(tmp_path, monkeypatch):
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: {2, 3}, raising=False)
    sys_cpus = fake_cpus(tmp_path, {cpu: str(cpu) for cpu in range(16)})
    assert cpus.usable_cpu_count(tmp_path / "no-proc", sys_cpus) == 2

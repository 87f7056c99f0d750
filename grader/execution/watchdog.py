"""Limits per sandbox, enforced from the grader: memory, processes and the work dir's disk use.

RLIMIT_AS and RLIMIT_NPROC bound each process (or uid), not the sandbox: four children under
a 1 GiB address-space limit held 2.85 GB together. Where no delegated cgroup v2 subtree does
it (grader/execution/cgroup.py), this watchdog sums the sandbox's processes (every process's
RSS, its tmpfs mounts, memfd files its processes hold; where the RSS sum passes the limit, the
proportional set size, so pages forks share count once) and walks the work dir (bytes on disk,
files and folders), and kills the whole sandbox at the first limit it finds passed. The verdict
says which limit, for the student's status and reason.

It samples as often as the memory left requires: the next sample comes before the sandbox could
reach its limit growing at GROWTH_BYTES_PER_S, every 10 ms near the limit, 4 times a second far
below it. A sample preempts the notebook's training threads, and at a fixed 100 per second it slowed
a 2-thread training loop by 9% (benchmarks/watchdog_cost.py).
"""

from __future__ import annotations

import functools
import os
import signal
import stat
import threading
import time
from dataclasses import dataclass

import psutil

MIB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")
MEMORY_EVERY_S = 0.01
QUIET_EVERY_S = 0.25
SCAN_EVERY_S = 0.1
DISK_EVERY_S = 0.5
# The fastest a sandbox's processes together fault in new memory: 2 cores here touch 1-2 GB/s; 8 GiB/s
# leaves room for a host with more and faster cores.
GROWTH_BYTES_PER_S = 8 << 30
WATCH_NICE = -10


@dataclass(frozen=True)
class Verdict:
    status: str  # "memory" or "error"
    reason: str


@dataclass
class Usage:
    """The highest figures seen, for the result and for tests."""

    memory: int = 0
    tasks: int = 0
    disk_bytes: int = 0
    disk_files: int = 0


class Watchdog:
    """Watch the process tree under `root_pid` (bwrap, or the runner unsandboxed) and its work dir.

    memory_bytes=None leaves memory to a cgroup; processes=None counts no tasks; tmpfs: the
    sandbox's work dir mount point, to also count the tmpfs mounts the sandbox sees (its /tmp),
    or None. Stops by SIGKILL to every process of the tree, root included.
    """

    def __init__(self, root_pid: int, workdir, *, memory_bytes: int | None, processes: int | None,
                 disk_bytes: int, disk_files: int, tmpfs: str | None = None):
        self.root_pid, self.workdir = root_pid, os.fspath(workdir)
        self.memory_bytes, self.processes, self.tmpfs = memory_bytes, processes, tmpfs
        self.disk_bytes, self.disk_files = disk_bytes, disk_files
        self.verdict: Verdict | None = None
        self.peak = Usage()
        self.samples = 0
        self._last_total = 0
        self._memfd = 0
        self._mounts: list[str] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="labgrader-sandbox-watchdog", daemon=True)

    def start(self) -> "Watchdog":
        self._thread.start()
        return self

    def stop(self) -> Verdict | None:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.verdict

    # the loop ----------------------------------------------------------------------------------

    def _run(self) -> None:
        try:  # ahead of the notebook's processes for the CPU, so a busy machine delays no sample
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WATCH_NICE)
        except OSError:
            pass
        tree: dict[int, tuple[int, int]] = {}
        next_scan = next_disk = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_scan:
                tree = _scan_tree(self.root_pid)
                next_scan = now + SCAN_EVERY_S
            else:
                tree = _reread(tree)
            if not tree:
                return
            self.samples += 1
            slow = now >= next_disk
            verdict = self._check_processes(tree, slow)
            if verdict is None and slow:
                verdict = self._check_disk(list(tree))
                next_disk = now + DISK_EVERY_S
            if verdict is not None:
                self.verdict = verdict
                _kill(list(tree))
                return
            wait = sample_every_s(None if self.memory_bytes is None else self.memory_bytes - self._last_total)
            next_scan = max(next_scan, now + wait)
            self._stop.wait(wait)

    def _check_processes(self, tree: dict[int, tuple[int, int]], slow: bool) -> Verdict | None:
        pids = list(tree)
        rss = sum(r for r, _ in tree.values())
        tasks = sum(t for _, t in tree.values())
        if self.memory_bytes is not None:
            if slow:
                self._memfd = _memfd_bytes(pids)
            if self.tmpfs and self._mounts is None and len(pids) > 2:
                self._mounts = _tmpfs_mounts(pids[1], self.tmpfs)
            extra = self._memfd + (_tmpfs_bytes(self._mounts) if self._mounts else 0)
            total = rss + extra
            if total > self.memory_bytes:
                _signal(pids, signal.SIGSTOP)  # no page more while the slower, exact sum is taken
                total = _pss(pids) + extra
                if total <= self.memory_bytes:
                    _signal(pids, signal.SIGCONT)
            self._last_total = total
            self.peak.memory = max(self.peak.memory, total)
            if total > self.memory_bytes:
                return Verdict("memory", f"the notebook's processes together used more than {self.memory_bytes // MIB} MiB "
                                         f"of memory ({len(pids)} processes, {total // MIB} MiB; --memory)")
        self.peak.tasks = max(self.peak.tasks, tasks)
        if self.processes is not None and tasks > self.processes:
            return Verdict("error", f"the notebook ran more than {self.processes} processes and threads at once "
                                    f"({tasks}; --processes)")
        return None

    def _check_disk(self, pids: list[int]) -> Verdict | None:
        used, files = disk_usage(self.workdir, stop_bytes=self.disk_bytes, stop_files=self.disk_files)
        if used <= self.disk_bytes:
            used += _deleted_bytes(pids, self.workdir)
        self.peak.disk_bytes = max(self.peak.disk_bytes, used)
        self.peak.disk_files = max(self.peak.disk_files, files)
        if used > self.disk_bytes or files > self.disk_files:
            return Verdict("error", f"the notebook passed the disk cap of its work dir: more than "
                                    f"{self.disk_bytes // MIB} MiB or {self.disk_files} files and folders "
                                    f"(--disk, --disk-files)")
        return None


def sample_every_s(headroom: int | None) -> float:
    """Seconds to the next sample: before memory growing at GROWTH_BYTES_PER_S could use up `headroom` bytes,
    within [MEMORY_EVERY_S, QUIET_EVERY_S]; None (no memory limit to watch) is QUIET_EVERY_S."""
    if headroom is None:
        return QUIET_EVERY_S
    return min(QUIET_EVERY_S, max(MEMORY_EVERY_S, headroom / GROWTH_BYTES_PER_S))


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, RSS bytes, threads) from /proc/PID/stat: one read, far cheaper than psutil."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        rest = data[data.rindex(b")") + 2:].split()
        return int(rest[1]), int(rest[21]) * PAGE, int(rest[17])
    except (OSError, ValueError, IndexError):
        return None


def _scan_tree(root_pid: int) -> dict[int, tuple[int, int]]:
    """{pid: (RSS bytes, threads)} of root_pid and all its descendants, root first: down the tree through each
    thread's children list, which costs the sandbox's own processes only (a pass over /proc costs every
    process of the host, and a class with many notebooks alive has many), or by that pass where the kernel
    keeps no such lists."""
    if not _children_listed():
        return _scan_all(root_pid)
    tree: dict[int, tuple[int, int]] = {}
    todo = [root_pid]
    while todo:
        pid = todo.pop(0)
        got = _stat(pid) if pid not in tree else None
        if got is not None:
            tree[pid] = got[1:]
            todo += _children(pid)
    return tree


@functools.lru_cache(maxsize=1)
def _children_listed() -> bool:
    return os.path.exists(f"/proc/self/task/{threading.get_native_id()}/children")


def _children(pid: int) -> list[int]:
    """The children of every thread of pid (a thread's fork is listed under that thread)."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return out


def _scan_all(root_pid: int) -> dict[int, tuple[int, int]]:
    """_scan_tree from one pass over /proc."""
    facts, children = {}, {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            got = _stat(int(name))
            if got is not None:
                facts[int(name)] = got
                children.setdefault(got[0], []).append(int(name))
    if root_pid not in facts:
        return {}
    tree, todo = {}, [root_pid]
    while todo:
        pid = todo.pop(0)
        if pid in facts and pid not in tree:
            tree[pid] = facts[pid][1:]
            todo += children.get(pid, [])
    return tree


def _reread(tree: dict[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """The known processes' figures again (new ones are found by the next full scan)."""
    fresh = {}
    for pid in tree:
        got = _stat(pid)
        if got is not None:
            fresh[pid] = got[1:]
    return fresh


def _pss(pids: list[int]) -> int:
    """Summed proportional set size: RSS with each shared page (a fork's copy-on-write pages, libraries)
    split among the processes sharing it. Slower than RSS, so asked only when RSS passes the limit."""
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_full_info().pss
        except (psutil.Error, AttributeError):
            got = _stat(pid)
            total += got[1] if got else 0
    return total


def _kill(pids: list[int]) -> None:
    _signal(pids, signal.SIGKILL)


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _tmpfs_mounts(inner: int, marker: str) -> list[str] | None:
    """The tmpfs mounts the sandbox sees, as host paths through its first process's root; None
    until its mounts are set up (the marker mount point shows). Read once: the notebook can mount
    nothing (no capabilities, no user namespace)."""
    try:
        with open(f"/proc/{inner}/mountinfo", "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return []
    points, ready = [], False
    for line in lines:
        left, _, right = line.partition(" - ")
        point = left.split(" ")[4].replace("\\040", " ") if left.count(" ") >= 4 else ""
        ready = ready or point == marker
        if right.startswith("tmpfs "):
            points.append(f"/proc/{inner}/root{point}")
    return points if ready else None


def _tmpfs_bytes(points: list[str]) -> int:
    total = 0
    for point in points:
        try:
            st = os.statvfs(point)
        except OSError:
            continue
        total += (st.f_blocks - st.f_bfree) * st.f_frsize
    return total


def _memfd_bytes(pids: list[int]) -> int:
    """Memory in memfd files the processes hold open (not mapped, they are in no RSS), each counted once."""
    return _open_file_bytes(pids, lambda target: target.startswith("/memfd:"), lambda st: True)


def _deleted_bytes(pids: list[int], workdir) -> int:
    """Disk held by files the processes deleted but keep open on the work dir's filesystem: in no folder,
    so the walk of the work dir never sees them."""
    try:
        dev = os.stat(workdir).st_dev
    except OSError:
        return 0
    return _open_file_bytes(pids, lambda target: target.endswith(" (deleted)"),
                            lambda st: st.st_nlink == 0 and st.st_dev == dev and stat.S_ISREG(st.st_mode))


def _open_file_bytes(pids: list[int], by_name, by_stat) -> int:
    """Blocks of the files the processes hold open that by_name(link target) and by_stat(stat) pick, each once."""
    seen, total = set(), 0
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            path = f"/proc/{pid}/fd/{fd}"
            try:
                if not by_name(os.readlink(path)):
                    continue
                st = os.stat(path)
            except OSError:
                continue
            if by_stat(st) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def disk_usage(root: str, *, stop_bytes: int | None = None, stop_files: int | None = None) -> tuple[int, int]:
    """(bytes allocated on disk, files and folders) under root, hard links once, without recursion;
    stops counting as soon as a stop figure is passed."""
    used, files, seen = 0, 0, set()
    stack = [root]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                files += 1
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                if st.st_nlink > 1:
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                used += st.st_blocks * 512
                if (stop_bytes is not None and used > stop_bytes) or (stop_files is not None and files > stop_files):
                    return used, files
    return used, files

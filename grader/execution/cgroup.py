"""A cgroup v2 per sandbox, where the host delegates a subtree with the memory and pids controllers.

With one (a systemd unit with `Delegate=yes`, see the README), the kernel holds every sandbox
to its memory (tmpfs and shared memory included) and process count exactly; elsewhere the
watchdog (grader/execution/watchdog.py) sums them from outside. Only a pure cgroup v2 host
counts: a process that also sits in cgroup v1 hierarchies belongs to a host that manages those
itself, and nothing here writes to any cgroup then. Detection only reads.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

NEEDED = ("memory", "pids")
SUPERVISOR = "labgrader-grader"
_counter = itertools.count()


def delegated(proc_cgroup: str = "/proc/self/cgroup", mountinfo: str = "/proc/self/mountinfo") -> Path | None:
    """This process's cgroup folder when it is a delegated v2 subtree with memory and pids; else None."""
    try:
        lines = [ln for ln in Path(proc_cgroup).read_text().splitlines() if ln.strip()]
        mounts = Path(mountinfo).read_text().splitlines()
    except OSError:
        return None
    if len(lines) != 1 or not lines[0].startswith("0::/"):
        return None
    points = [ln.partition(" - ")[0].split(" ")[4] for ln in mounts
              if ln.partition(" - ")[2].startswith("cgroup2 ")]
    if len(points) != 1:
        return None
    here = Path(points[0]) / lines[0][4:].strip("/")
    if here.name == SUPERVISOR:
        here = here.parent
    try:
        controllers = (here / "cgroup.controllers").read_text().split()
    except OSError:
        return None
    if not all(c in controllers for c in NEEDED):
        return None
    if not all(os.access(here / f, os.W_OK) for f in ("cgroup.procs", "cgroup.subtree_control")):
        return None
    return here


def _write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def prepare(base: Path) -> None:
    """Move the grader into a leaf of its own and hand memory and pids down (cgroup v2 keeps
    processes out of inner nodes). Idempotent."""
    leaf = base / SUPERVISOR
    leaf.mkdir(exist_ok=True)
    for pid in (base / "cgroup.procs").read_text().split():
        try:
            _write(leaf / "cgroup.procs", pid)
        except OSError:
            pass
    enabled = (base / "cgroup.subtree_control").read_text().split() if (base / "cgroup.subtree_control").exists() else []
    missing = [c for c in NEEDED if c not in enabled]
    if missing:
        _write(base / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))


class SandboxCgroup:
    """One sandbox's cgroup: memory.max (no swap), pids.max, killed as a group at its limit."""

    def __init__(self, base: Path, slot: int, *, memory_bytes: int, processes: int):
        prepare(base)
        self.path = base / f"sandbox-{slot}-{os.getpid()}-{next(_counter)}"
        self.path.mkdir()
        _write(self.path / "memory.max", str(memory_bytes))
        for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
            if (self.path / name).exists():
                _write(self.path / name, value)
        _write(self.path / "pids.max", str(processes))

    def wrap(self, argv: list[str]) -> list[str]:
        """argv started inside this cgroup: a shell moves itself in, then becomes argv."""
        return ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.path), *argv]

    def ran_out_of_memory(self) -> bool:
        return self._event("memory.events", "oom_kill") > 0

    def hit_process_limit(self) -> bool:
        return self._event("pids.events", "max") > 0

    def _event(self, name: str, key: str) -> int:
        try:
            for line in (self.path / name).read_text().splitlines():
                k, _, v = line.partition(" ")
                if k == key:
                    return int(v)
        except (OSError, ValueError):
            pass
        return 0

    def close(self, wait_s: float = 10.0) -> None:
        """Kill what is left in it and remove it."""
        if (self.path / "cgroup.kill").exists():
            try:
                _write(self.path / "cgroup.kill", "1")
            except OSError:
                pass
        end = time.monotonic() + wait_s
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > end:
                    return
                time.sleep(0.05)

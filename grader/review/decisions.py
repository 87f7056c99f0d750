"""The review's decision log, OUT/review/decisions.jsonl: one JSON line per decision, fsync'd before it is confirmed.

Decisions are data: the overrides, the gradebook and the feedback are all rebuilt from this log.
A line cut short by a kill (no newline at its end) was never confirmed: it is ignored, reported
and cut off, so the next decision starts on a clean line. A damaged line before the last one
means the file was edited or broken by something else: it is named, and the review refuses to
start until it is fixed or `--reset` moves the log aside.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from grader.common.atomic import fsync_dir
from grader.common.errors import UserError

VERSION = 1
KINDS = ("decide", "split")
PARTS = ("", "reason")


@dataclass
class DecisionLog:
    """The entries read from the log, and the appends after them."""

    path: Path
    entries: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def next_seq(self) -> int:
        return (self.entries[-1]["seq"] + 1) if self.entries else 1

    def append(self, entry: dict) -> dict:
        """Give the entry its sequence number and time, write it as one line, flush and fsync it."""
        entry = {"v": VERSION, "seq": self.next_seq,
                 "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **entry}
        problem = check_entry(entry)
        if problem:
            raise ValueError(problem)
        line = json.dumps(entry, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n"
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        if new:
            fsync_dir(self.path.parent)
        self.entries.append(entry)
        return entry


def hold_lock(out: str | Path):
    """Take OUT/review/server.lock for as long as the returned file stays open; UserError when another process has it.

    Two servers on one OUT/ would both append with the same sequence numbers and decide over each other's
    groups. An flock belongs to the open file, so the kernel drops it when the process dies: a kill -9 never
    leaves a stale lock. The file keeps the holder's pid, for the message.
    """
    import fcntl

    path = Path(out) / "review" / "server.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+", encoding="ascii")
    except OSError as e:
        raise UserError(f"{path}: cannot open the review lock: {e.strerror or e}")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read(20).strip()
        f.close()
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise UserError(f"{out}: another `labgrader review`{who} is serving this folder; stop it first "
                        "(two would write the same decision log)")
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def open_log(path: str | Path, *, reset: bool = False) -> DecisionLog:
    """Read the log (creating nothing); reset=True moves an existing one aside and starts empty."""
    path = Path(path)
    log = DecisionLog(path)
    if reset and path.exists():
        aside = path.with_name(f"{path.name}.{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.bak")
        try:
            os.replace(path, aside)
        except OSError as e:
            raise UserError(f"{path}: cannot move it aside for --reset: {e.strerror or e}")
        log.notes.append(f"--reset: the old decisions were moved to {aside.name}")
        return log
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return log
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}")
    lines = data.split(b"\n")
    torn = lines.pop()
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        entry, problem = _parse(raw)
        if problem is None and log.entries and entry["seq"] <= log.entries[-1]["seq"]:
            problem = f"sequence number {entry['seq']} does not follow {log.entries[-1]['seq']}"
        if problem:
            raise UserError(f"{path}:{number}: damaged decision line ({problem}); fix or delete that line, "
                            "or start the review over with --reset (the old log is kept aside)")
        log.entries.append(entry)
    if torn.strip():
        keep = len(data) - len(torn)
        try:
            with open(path, "r+b") as f:
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise UserError(f"{path}: cannot cut off its torn last line: {e.strerror or e}")
        log.notes.append(f"{path.name}:{len(lines) + 1}: ignored a torn last line "
                         f"({len(torn)} bytes, a decision cut short before it was confirmed)")
    return log


def _parse(raw: bytes) -> tuple[dict | None, str | None]:
    try:
        entry = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return None, f"not JSON: {str(e)[:80]}"
    problem = check_entry(entry)
    return (entry, None) if problem is None else (None, problem)


def check_entry(entry) -> str | None:
    """Why an entry is not a decision this version writes, or None."""
    if not isinstance(entry, dict):
        return "not an object"
    if entry.get("v") != VERSION:
        return f"version {entry.get('v')!r}, expected {VERSION}"
    if not isinstance(entry.get("seq"), int) or isinstance(entry.get("seq"), bool) or entry["seq"] < 1:
        return "no sequence number"
    if entry.get("kind") not in KINDS:
        return f"kind {entry.get('kind')!r} is not one of {', '.join(KINDS)}"
    if not isinstance(entry.get("question"), str) or not isinstance(entry.get("time"), str):
        return "no question or time"
    students = entry.get("students")
    if not isinstance(students, list) or not students or not all(isinstance(s, str) and s for s in students):
        return "no students"
    if entry["kind"] == "decide":
        points = entry.get("points")
        if points is not None and (isinstance(points, bool) or not isinstance(points, (int, float))
                                   or not math.isfinite(points) or points < 0):
            return f"points {points!r} is not a number of points"
        items = entry.get("items")
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            return "items is not a list of rubric item ids"
        if not isinstance(entry.get("comment"), str) or entry.get("part") not in PARTS:
            return "no comment or part"
    return None

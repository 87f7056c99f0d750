"""The run store: REF.runs.jsonl beside the artifact, one finished run per line, fsynced as it lands.

A header line binds the file to the setup that produced it (spec, seeds, epochs, data, dtype,
device, ...) and every run line repeats the binding's hash, so runs from another setup are never
mixed in. A kill -9 can leave a half-written last line; opening the store drops it (and any other
unreadable line) by rewriting the file atomically before new runs are appended.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from grader.common.atomic import write_text_atomic
from grader.common.errors import UserError

FORMAT = "labgrader-runs/1"


def store_path(out: str | os.PathLike) -> Path:
    """REF.json -> REF.runs.jsonl in the same folder."""
    out = Path(out)
    stem = out.name[:-5] if out.name.endswith(".json") else out.name
    return out.with_name(stem + ".runs.jsonl")


def binding_hash(binding: dict) -> str:
    return hashlib.sha256(json.dumps(binding, sort_keys=True).encode()).hexdigest()[:16]


def run_key(config: dict, seed: int) -> tuple:
    return (float(config["lr"]), int(config["batch_size"]), float(config["momentum"]), int(seed))


def _differences(ours: dict, theirs) -> str:
    if not isinstance(theirs, dict):
        return "no readable header"
    diffs = []
    for k in sorted(set(ours) | set(theirs)):
        if ours.get(k) != theirs.get(k):
            a, b = json.dumps(ours.get(k)), json.dumps(theirs.get(k))
            diffs.append(f"{k} {a[:40]} now vs {b[:40]} there")
    return "; ".join(diffs[:3]) or "binding hash differs"


class RunStore:
    """Finished runs keyed by (lr, batch_size, momentum, seed); append() is thread-safe and durable."""

    def __init__(self, path: Path, binding: dict, runs: dict, dropped: int):
        self.path = path
        self.binding = binding
        self.bind = binding_hash(binding)
        self.runs = runs
        self.dropped = dropped
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | os.PathLike, binding: dict, epochs: int, fresh: bool = False) -> "RunStore":
        """Read (or start) the store; a store made for another setup is refused with one line."""
        path = Path(path)
        bind = binding_hash(binding)
        header = json.dumps({"store": FORMAT, "bind": bind, "binding": binding}, sort_keys=True)
        try:
            if fresh:
                path.unlink(missing_ok=True)
            raw = path.read_bytes() if path.exists() else b""
        except OSError as e:
            raise UserError(f"cannot read the run store {path}: {e.strerror or e}")
        lines = raw.decode("utf-8", errors="replace").split("\n")
        runs: dict = {}
        dropped = 0
        if raw.strip():
            try:
                head = json.loads(lines[0])
            except ValueError:
                head = None
            if not isinstance(head, dict) or head.get("store") != FORMAT or head.get("bind") != bind:
                theirs = head.get("binding") if isinstance(head, dict) else None
                raise UserError(f"run store {path} holds runs of another setup ({_differences(binding, theirs)}); "
                                "pass --fresh to discard them, or choose another --out")
            for line in lines[1:]:
                if not line.strip():
                    continue
                rec = _parse(line, bind, epochs)
                if rec is None:
                    dropped += 1
                else:
                    runs[run_key(rec["config"], rec["seed"])] = rec
        clean = raw.endswith(b"\n") and dropped == 0 and raw.strip()
        if not clean:
            body = "".join(json.dumps(r, allow_nan=False) + "\n" for r in runs.values())
            try:
                write_text_atomic(path, header + "\n" + body)
            except OSError as e:
                raise UserError(f"cannot write the run store {path}: {e.strerror or e}")
        return cls(path, binding, runs, dropped)

    def has(self, config: dict, seed: int) -> bool:
        return run_key(config, seed) in self.runs

    def get(self, config: dict, seed: int) -> dict:
        return self.runs[run_key(config, seed)]

    def append(self, record: dict) -> None:
        """One JSON line, flushed and fsynced before returning: a finished run survives kill -9."""
        rec = dict(record, bind=self.bind)
        line = json.dumps(rec, allow_nan=False) + "\n"
        with self._lock:
            try:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(line)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                raise UserError(f"cannot append to the run store {self.path}: {e.strerror or e}")
            self.runs[run_key(rec["config"], rec["seed"])] = rec


def _parse(line: str, bind: str, epochs: int) -> dict | None:
    """A run line of this store, else None (half-written, foreign, or malformed)."""
    try:
        rec = json.loads(line, parse_constant=lambda t: float("nan"))
    except ValueError:
        return None
    try:
        if rec.get("bind") != bind:
            return None
        run_key(rec["config"], rec["seed"])
        h = rec["history"]
        if not isinstance(rec["diverged"], bool) or any(len(h[k]) != epochs for k in ("acc", "test_acc", "loss", "test_loss")):
            return None
        if any(v is not None and v != v for k in ("loss", "test_loss") for v in h[k]):
            return None
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    return rec

"""The persistent memo of trained runs: one file per request key, written only by the service.

An entry is a wire frame (reference/wire.py), not a pickle, written atomically; a damaged or
unreadable entry counts as a miss and is trained again. Requests with the same key always
get the same answer, across a class, across re-grades and across `labgrader grade` runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from grader.common.atomic import write_bytes_atomic
from grader.common.errors import UserError
from reference import wire
from reference.trainrequest import MAX_HIDDEN, RequestError, TrainAnswer, answer_payload

SUFFIX = ".lgts"


def default_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "labgrader" / "train-memo"


class Memo:
    def __init__(self, root: str | os.PathLike, *, input_dim: int, classes: int):
        self.root = Path(root)
        self.max_payload = answer_payload(MAX_HIDDEN, input_dim, classes)
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise UserError(f"cannot create the training memo {self.root}: {e.strerror or e}") from None

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}{SUFFIX}"

    def get(self, key: str) -> TrainAnswer | dict | None:
        """The stored answer, a stored {"local": reason} for runs that diverged, or None."""
        try:
            data = self._path(key).read_bytes()
        except OSError:
            return None
        try:
            header, tensors = wire.read_frame(wire.bytes_reader(data), max_payload=self.max_payload)
            if header.get("key") != key:
                return None
            if header.get("local"):
                return {"local": str(header.get("reason", "diverged")), "diverged": bool(header.get("diverged", True))}
            return TrainAnswer.from_frame(header, tensors)
        except (wire.WireError, RequestError, EOFError, ValueError, RuntimeError):
            return None

    def put(self, key: str, answer: TrainAnswer | dict) -> None:
        if isinstance(answer, TrainAnswer):
            header, tensors = answer.frame(key=key)
        else:
            header, tensors = {"ok": False, "key": key, "local": True, "reason": answer["local"],
                               "diverged": bool(answer.get("diverged"))}, {}
        path = self._path(key)
        path.parent.mkdir(exist_ok=True, mode=0o700)
        write_bytes_atomic(path, wire.encode(header, tensors))

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob(f"*/*{SUFFIX}"))

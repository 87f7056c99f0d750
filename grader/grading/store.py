"""Per-student result store: one file per finished student, so an interrupted run resumes.

OUT/.state/<file stem>.json is written atomically the moment a student finishes. A rerun reuses it
when the submission's content hash and the options that shape the result are unchanged; the
gradebook and results.json are always rebuilt from these files, so killing the grader at any
moment loses at most the students it was working on. A stored result that no longer loads or no
longer passes `check_result` is graded again, never replayed.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from grader import SCHEMA_DIR
from grader.common.atomic import write_json_atomic
from grader.common.names import display, file_stem
from grader.common.walk import walk

STATE_FORMAT = "labgrader-state/1"


def content_sha256(path: str | Path) -> str:
    """sha256 over a submission: each entry's relative path, type and bytes; symlinks by their target."""
    root = Path(path)
    h = hashlib.sha256()
    for rel, full in _entries(root):
        st = os.lstat(full)
        if stat.S_ISLNK(st.st_mode):
            _frame(h, "link", rel, os.readlink(full).encode("utf-8", "surrogateescape"))
        elif stat.S_ISREG(st.st_mode):
            fh = hashlib.sha256()
            with open(full, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    fh.update(chunk)
            _frame(h, "file", rel, fh.digest())
        elif stat.S_ISDIR(st.st_mode):
            _frame(h, "dir", rel, b"")
        else:
            _frame(h, "other", rel, b"")
    return h.hexdigest()


def _entries(root: Path):
    if root.is_symlink() or not root.is_dir():
        yield root.name, root
        return
    for dirpath, dirnames, filenames in walk(root):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            full = Path(dirpath) / name
            yield full.relative_to(root).as_posix(), full
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
        if dirpath != str(root):
            yield Path(dirpath).relative_to(root).as_posix() + "/", Path(dirpath)


def _frame(h, kind: str, rel: str, payload: bytes) -> None:
    name = rel.encode("utf-8", "surrogateescape")
    h.update(f"{kind}\0{len(name)}\0".encode() + name + f"\0{len(payload)}\0".encode() + payload)


def options_sha256(options: dict) -> str:
    """A stable hash of the options that change a student's result."""
    return hashlib.sha256(json.dumps(options, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_result(result) -> None:
    """Raise ValueError (one line) unless `result` is a student entry of results.json that can be written:
    valid against the schema, valid Unicode, finite numbers."""
    try:
        json.dumps(result, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as e:
        raise ValueError(f"not writable as JSON: {type(e).__name__}: {display(e)}") from None
    error = next(iter(_student_validator().iter_errors(result)), None)
    if error is not None:
        where = "/".join(map(str, error.absolute_path)) or "top level"
        raise ValueError(f"not a valid result: {where}: {display(error.message)[:200]}")


@lru_cache(maxsize=1)
def _student_validator():
    from jsonschema import Draft202012Validator

    schema = json.loads((SCHEMA_DIR / "results.schema.json").read_text(encoding="utf-8"))
    return Draft202012Validator({**schema["$defs"]["student"], "$defs": schema["$defs"]})


class Store:
    """OUT/.state: read and write finished students' results."""

    def __init__(self, out: str | Path):
        self.dir = Path(out) / ".state"

    def path(self, student: str) -> Path:
        return self.dir / f"{file_stem(student)}.json"

    def load(self, student: str) -> dict | None:
        """The stored record, or None when absent or unreadable (a torn or foreign file is redone)."""
        try:
            record = json.loads(self.path(student).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        ok = isinstance(record, dict) and record.get("format") == STATE_FORMAT and isinstance(record.get("result"), dict)
        return record if ok else None

    def fresh(self, student: str, content: str, options: str) -> dict | None:
        """The stored result when it was made from this very submission with these options."""
        record = self.load(student)
        if record and record.get("content_sha256") == content and record.get("options_sha256") == options:
            try:
                check_result(record["result"])
            except ValueError:
                return None
            return record["result"]
        return None

    def save(self, student: str, content: str, options: dict, result: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path(student), {
            "format": STATE_FORMAT,
            "student": display(student),
            "content_sha256": content,
            "options_sha256": options_sha256(options),
            "options": options,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "result": result,
        })

    def discard(self, student: str) -> None:
        """Forget a student, so the next run grades them again."""
        try:
            self.path(student).unlink()
        except FileNotFoundError:
            pass

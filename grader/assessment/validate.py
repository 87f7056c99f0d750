"""Answer files: read them safely, check them against their JSON Schema, normalize the values.

The schemas in schemas/ decide what is valid; this module only turns their verdicts into one
plain line per problem (file, key, what is wrong) and the valid values into typed Python values.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from grader import SCHEMA_DIR
from grader.common.errors import UserError
from grader.common.names import display, is_valid_unicode
from grader.common.text import json_kind, one_line

MAX_BYTES = 65536

# What an answer of each schema $def must be, said to a student.
EXPECTED = {
    "number": "is not a number",
    "integer": "is not a whole number",
    "yesno": "does not start with yes or no",
    "text": "is not text",
}
NOT_UNICODE = "holds text that is not valid Unicode (a lone UTF-16 surrogate such as \\ud800)"
_BLANK = re.compile(r"^\s*$")
_YESNO = re.compile(r"^\s*(yes|no)([^a-z0-9_]|$)", re.IGNORECASE)


@dataclass(frozen=True)
class YesNo:
    """A yes/no answer and the reason written after it ("" for a bare boolean)."""

    yes: bool
    reason: str


@dataclass(frozen=True)
class Answer:
    """One key of an answer file: as given, and as a typed value once valid.

    value is None when the key is not answered or invalid; error is the one-line reason when invalid.
    """

    key: str
    kind: str
    raw: Any = None
    value: Any = None
    error: str | None = None

    @property
    def answered(self) -> bool:
        return self.value is not None


def read_answer_file(path: str | Path, max_bytes: int = MAX_BYTES) -> dict:
    """Read one answer file without following symlinks; any problem is a one-line UserError.

    exit_code 1 means the file was read and judged unusable (a symlink, a FIFO, too large, not
    UTF-8, not JSON, not an object); 2 means it could not be read at all.
    """
    path = Path(path)
    name = path.name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UserError(f"{name}: no such file", 2)
    except OSError as e:
        if e.errno == errno.ELOOP or os.path.islink(path):
            raise UserError(f"{name}: is a symbolic link, not a file", 1)
        raise UserError(f"{name}: cannot read: {e.strerror or e}", 2)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = "a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "not a regular file"
            raise UserError(f"{name}: is {what}, not a file", 1)
        if st.st_size > max_bytes:
            raise UserError(f"{name}: is {st.st_size} bytes, more than the {max_bytes} allowed", 1)
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise UserError(f"{name}: is more than the {max_bytes} bytes allowed", 1)
    except OSError as e:
        raise UserError(f"{name}: cannot read: {e.strerror or e}", 2)
    finally:
        os.close(fd)
    return parse_answer_bytes(name, b"".join(chunks))


MAX_INT_DIGITS = 100


class _TooLong(ValueError):
    """A JSON integer past MAX_INT_DIGITS: valid JSON, but Python would refuse to read it past 4300 digits
    with advice about sys.set_int_max_str_digits that means nothing to a student."""


def parse_answer_bytes(name: str, raw: bytes) -> dict:
    """Decode and parse an answer file's bytes; the top level must be a JSON object."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{name}: is not UTF-8 text (bad byte at offset {e.start})", 1)

    def no_constant(word):
        raise ValueError(f"{word} is not allowed in JSON")

    def no_repeats(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"key {key!r} appears twice")
            seen.add(key)
        return dict(pairs)

    def bounded_int(digits):
        if len(digits.lstrip("-")) > MAX_INT_DIGITS:
            raise _TooLong(f"{name}: holds a whole number of {len(digits.lstrip('-'))} digits, too long to be an answer")
        return int(digits)

    try:
        data = json.loads(text, parse_constant=no_constant, object_pairs_hook=no_repeats, parse_int=bounded_int)
    except _TooLong as e:
        raise UserError(str(e), 1)
    except json.JSONDecodeError as e:
        raise UserError(f"{name}: is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})", 1)
    except RecursionError:
        raise UserError(f"{name}: is not valid JSON: nested too deeply", 1)
    except ValueError as e:
        raise UserError(f"{name}: is not valid JSON: {e}", 1)
    if not isinstance(data, dict):
        raise UserError(f"{name}: holds {json_kind(data)}, not an object with the answer keys", 1)
    return data


@lru_cache(maxsize=None)
def load_schema(filename: str) -> dict:
    """The schema of an answer file, by the file's name (7b_ex1.json -> 7b_ex1.schema.json)."""
    path = SCHEMA_DIR / (Path(filename).stem + ".schema.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{filename}: no schema for this answer file (looked for {path})", 2)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot load the schema: {e}", 2)


@lru_cache(maxsize=None)
def _validator(filename: str):
    from jsonschema import Draft202012Validator

    schema = load_schema(filename)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def answer_kinds(filename: str) -> dict[str, str]:
    """key -> answer kind (number, integer, yesno, text), read from the schema's $refs."""
    props = load_schema(filename).get("properties", {})
    return {k: v.get("$ref", "#/$defs/text").rsplit("/", 1)[-1] for k, v in props.items()}


def validate_answers(filename: str, data: Any) -> list[str]:
    """Every problem of one answer file, each one line: `7b_ex1.json: a: "0.1x" is not a number`."""
    validator = _validator(filename)
    if not isinstance(data, dict):
        return [f"{filename}: holds {json_kind(data)}, not an object with the answer keys"]
    allowed = list(load_schema(filename).get("properties", {}))
    kinds = answer_kinds(filename)
    found = []
    for error in validator.iter_errors(data):
        path = list(error.absolute_path)
        if not path and error.validator == "additionalProperties":
            for key in (k for k in data if k not in allowed):
                found.append((key, f"{_key(key)}: unexpected key (allowed: {', '.join(allowed)})"))
        elif path and path[0] in kinds:
            found.append((path[0], f"{path[0]}: {_describe(kinds[path[0]], data[path[0]])}"))
        else:
            found.append(("", f"{'.'.join(str(p) for p in path) or 'top level'}: {one_line(error.message)}"))
    for key, kind in kinds.items():
        if key in data and _beyond_schema(kind, data[key]):
            found.append((key, f"{key}: {_describe(kind, data[key])}"))
    for key, value in data.items():
        if _invalid_text(key) or _invalid_text(value):
            found.append((display(key), f"{_key(key)}: {NOT_UNICODE}"))
    lines = [f"{filename}: {text}" for _, text in sorted(found, key=lambda kt: kt[0])]
    return list(dict.fromkeys(lines))


def parse_answers(filename: str, data: dict) -> dict[str, Answer]:
    """Each schema key -> Answer with a typed value: float, int, YesNo, str, or None (not answered)."""
    kinds = answer_kinds(filename)
    validator = _validator(filename)
    out = {}
    for key, kind in kinds.items():
        if key not in data:
            out[key] = Answer(key, kind)
            continue
        raw = data[key]
        if _invalid_text(raw):
            out[key] = Answer(key, kind, None, None, f"{filename}: {key}: {NOT_UNICODE}")
        elif _beyond_schema(kind, raw) or any(True for _ in validator.iter_errors({key: raw})):
            out[key] = Answer(key, kind, raw, None, f"{filename}: {key}: {_describe(kind, raw)}")
        else:
            out[key] = Answer(key, kind, raw, _normalize(kind, raw))
    return out


def _invalid_text(value: Any) -> bool:
    """Some string in value (at any depth, keys included) holds a lone surrogate: it cannot be stored as UTF-8."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if not is_valid_unicode(v):
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def _beyond_schema(kind: str, raw: Any) -> bool:
    """What JSON Schema cannot say: a number answer must be finite ("1e999" parses as infinity)."""
    if kind not in ("number", "integer"):
        return False
    v = _numeric(raw)
    return v is not None and not math.isfinite(v) and not (isinstance(raw, str) and _BLANK.match(raw))


def _normalize(kind: str, raw: Any):
    if raw is None or (isinstance(raw, str) and _BLANK.match(raw)):
        return None
    if kind == "number":
        return float(raw)
    if kind == "integer":
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float):
            return int(raw)
        return int(float(str(raw).strip()))
    if kind == "yesno":
        if isinstance(raw, bool):
            return YesNo(raw, "")
        m = _YESNO.match(raw)
        return YesNo(m.group(1).lower() == "yes", raw[m.end(1):].lstrip(" \t\r\n,.;:!-–—").strip())
    return raw.strip()


def _describe(kind: str, value: Any) -> str:
    """Why a value is not a valid answer of this kind, in a student's words."""
    if kind in ("number", "integer") and _numeric(value) is not None:
        v = _numeric(value)
        if not math.isfinite(v):
            return f"{_show(value)} is not a finite number"
        if v <= 0:
            return f"{_show(value)} is not a positive number"
    return f"{_show(value)} {EXPECTED.get(kind, 'is not valid')}"


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf
    except ValueError:
        return None


def _show(value: Any, width: int = 40) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (RecursionError, ValueError):
        text = "(a deeply nested value)"
    return display(one_line(text, width))


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_.-]{1,30}", key) else _show(key, 32)

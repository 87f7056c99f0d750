"""The reference artifact: build it from spec + runs + provenance, check it, write it atomically.

No torch here, so the grader can rebuild or check an artifact without paying for it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import grader
from grader.common.atomic import write_json_atomic
from grader.common.errors import UserError
from reference.analysis import config_of, expected_answers
from reference.spec import Spec

FORMAT = "labgrader-reference/1"
# grader/schemas is where the installed package keeps the schemas (a link to schemas/ in the repo).
SCHEMA_PATH = grader.SCHEMA_DIR / "reference.schema.json"
RUN_KEYS = ("config", "seed", "diverged", "diverged_epoch", "history")


def source_line(provenance: dict) -> str:
    """Where the numbers came from, in words: quoted in every explanation and summary."""
    data = provenance.get("data", {})
    seeds = provenance.get("seeds", [])
    return (f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}, {provenance.get('epochs')} epochs, "
            f"{data.get('kind', '?')} data, {provenance.get('device', '?')}")


def build_artifact(spec: Spec, runs: Sequence[dict], provenance: dict) -> dict:
    """The DESIGN.md artifact; runs in the spec's config order, then seed order."""
    seeds = list(provenance["seeds"])
    order = {c: i for i, c in enumerate(spec.configs())}
    seed_pos = {s: i for i, s in enumerate(seeds)}
    kept = [{k: r[k] for k in RUN_KEYS} for r in runs if config_of(r) in order and r["seed"] in seed_pos]
    kept.sort(key=lambda r: (order[config_of(r)], seed_pos[r["seed"]]))
    tables, questions = expected_answers(spec, kept, seeds, source_line(provenance))
    return {
        "format": FORMAT,
        "assignment": spec.assignment_id,
        "spec_sha256": spec.sha256,
        "provenance": provenance,
        "sweeps": {name: {"vary": sw.vary, "values": list(sw.values), "fixed": dict(sw.fixed)}
                   for name, sw in spec.sweeps.items()},
        "runs": kept,
        "tables": tables,
        "questions": questions,
    }


def _non_finite(obj, path="") -> str | None:
    if isinstance(obj, float) and not math.isfinite(obj):
        return path or "top level"
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = enumerate(obj)
    else:
        return None
    for k, v in items:
        where = _non_finite(v, f"{path}[{k}]" if isinstance(k, int) else f"{path}.{k}".lstrip("."))
        if where:
            return where
    return None


def validation_errors(obj: dict) -> list[str]:
    """Every way obj breaks the schema (plus non-finite numbers, which JSON Schema cannot see), one line each."""
    from jsonschema import Draft202012Validator

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    out = []
    bad = _non_finite(obj)
    if bad:
        out.append(f"{bad}: not a finite number")
    for e in sorted(Draft202012Validator(schema).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path).lstrip(".") or "top level"
        message = " ".join(e.message.split())
        out.append(f"{where}: {message[:160]}")
    return out


def validate_artifact(obj: dict, name: str = "reference artifact") -> None:
    errors = validation_errors(obj)
    if errors:
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise UserError(f"{name}: not a valid reference artifact: {errors[0]}{more}")


def write_artifact(path: str | Path, obj: dict) -> Path:
    """Validate, then write atomically: an interrupted write leaves the previous artifact intact."""
    validate_artifact(obj, str(path))
    try:
        return write_json_atomic(path, obj)
    except OSError as e:
        raise UserError(f"cannot write the reference artifact {path}: {e.strerror or e}")


def read_artifact(path: str | Path) -> dict:
    """Load and validate an artifact; any problem is one UserError line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such reference artifact (write one with `labgrader reference run --out {path}`)")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the reference artifact: {getattr(e, 'strerror', None) or e}")

    def refuse(token):
        raise ValueError(f"{token} is not a JSON number")

    try:
        obj = json.loads(text, parse_constant=refuse)
    except ValueError as e:
        raise UserError(f"{path}: is not a JSON reference artifact: {e}")
    if not isinstance(obj, dict):
        raise UserError(f"{path}: is not a reference artifact (a JSON object was expected)")
    validate_artifact(obj, str(path))
    return obj

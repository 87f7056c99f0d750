"""Load a reference artifact for scoring: read, validate against its schema, check it fits the spec.

No torch here: scoring and self-checks only read the artifact that `reference run` wrote.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import reference as _reference_pkg
from grader import SCHEMA_DIR
from grader.common.errors import UserError

DEMO_REFERENCE = Path(_reference_pkg.__file__).resolve().parent / "demo" / "lab7b-synthetic.json"
SCHEMA = SCHEMA_DIR / "reference.schema.json"
DEMO_NOTE = ("using the bundled demo reference {path}: its expected answers come from a sweep on synthetic data, "
             "not Fashion-MNIST; pass --reference REF for your course's own")


@dataclass(frozen=True)
class Reference:
    """A validated artifact with where it came from; `data` is the artifact as JSON."""

    path: Path
    sha256: str
    data: dict
    demo: bool

    def question(self, qid: str) -> dict:
        return self.data["questions"][qid]

    @property
    def provenance(self) -> dict:
        return self.data.get("provenance", {})

    def summary(self) -> dict:
        """What a gradebook reader needs to trust the expected answers: where, on what, how many seeds."""
        p = self.provenance
        data = p.get("data", {})
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "demo": self.demo,
            "spec_sha256": self.data.get("spec_sha256"),
            "device": p.get("device"),
            "device_name": p.get("device_name"),
            "data_kind": data.get("kind"),
            "n_train": data.get("n_train"),
            "n_test": data.get("n_test"),
            "seeds": list(p.get("seeds", [])),
            "epochs": p.get("epochs"),
            "created": p.get("created"),
        }


def load_reference(path: str | Path | None = None, *, check_runs: bool = True) -> Reference:
    """Read and validate an artifact; None means the bundled demo (the caller says so on stderr).

    check_runs=False leaves the per-run histories unchecked: scoring never reads them, and they
    are most of the validation time, which a student's self-check should not pay.
    """
    demo = path is None
    path = Path(DEMO_REFERENCE if demo else path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if demo:
            raise UserError(f"the bundled demo reference is missing ({path}); pass --reference REF")
        raise UserError(f"{path}: no such reference artifact")
    except OSError as e:
        raise UserError(f"{path}: cannot read the reference artifact: {e.strerror or e}")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path}: is not a JSON reference artifact: {e}")
    _validate(path, data if check_runs or not isinstance(data, dict) else {**data, "runs": []})
    return Reference(path, hashlib.sha256(raw).hexdigest(), data, demo)


def _validate(path: Path, data) -> None:
    from jsonschema import Draft202012Validator

    try:
        schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the reference schema {SCHEMA}: {e}")
    errors = sorted(Draft202012Validator(schema).iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        first = errors[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.absolute_path).lstrip(".") or "top level"
        message = " ".join(first.message.split())
        message = message if len(message) <= 160 else message[:159] + "…"
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise UserError(f"{path}: not a valid reference artifact: {where}: {message}{more}")


def reference_for(path, spec, say, *, check_runs: bool = True) -> Reference:
    """The artifact a command scores against: --reference, else the demo (said via say), checked against the spec."""
    ref = load_reference(path, check_runs=check_runs)
    if ref.demo:
        say(DEMO_NOTE.format(path=ref.path))
    else:
        note = spec_mismatch(ref, spec)
        if note:
            say(note)
    check_covers(ref, spec)
    return ref


def check_covers(ref: Reference, spec) -> None:
    """Every question of the spec must have its expected answer in the artifact, of the same kind."""
    questions = ref.data.get("questions", {})
    for q in spec.questions:
        rq = questions.get(q.id)
        if rq is None:
            raise UserError(f"{ref.path}: has no expected answer for question {q.id} of spec {spec.path.name}"
                            " (made for another spec? run `labgrader reference run` with this spec)")
        if rq.get("kind") != q.kind:
            raise UserError(f"{ref.path}: question {q.id} is {rq.get('kind')!r} there but {q.kind!r} in spec {spec.path.name}")
        if q.kind == "optimum" and not (rq.get("grid") and rq.get("tie_set")):
            raise UserError(f"{ref.path}: question {q.id} has no grid or tie set")
        if q.kind == "yesno" and not isinstance(rq.get("truth"), bool):
            raise UserError(f"{ref.path}: question {q.id} has no yes/no truth")


def spec_mismatch(ref: Reference, spec) -> str | None:
    """A warning line when the artifact was computed from another version of the spec."""
    theirs = ref.data.get("spec_sha256")
    if theirs and theirs != spec.sha256:
        return (f"note: {ref.path.name} was computed from a different spec than {spec.path.name} "
                f"(sha256 {theirs[:12]}… vs {spec.sha256[:12]}…); scoring uses the artifact's tie sets and truths")
    return None

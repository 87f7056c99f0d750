"""Each answer file `check` looks at: found, valid, every problem, and each question judged.

Without the course's reference (`self_files`) a question the reference decides (an optimum or a
yes/no) gets no verdict and no points: only valid / invalid / not answered, and, when the notebook
ran, what the student's own runs say. Free-text questions keep the rubric's provisional feedback,
which names no expected value. With --reference (`reference_files`) every question is scored as
`grade` scores it, hidden unless --reveal.
"""

from __future__ import annotations

from pathlib import Path

from grader.assessment.score import VERDICT_WORDS, rubric_hits, score_question
from grader.assessment.validate import parse_answers, read_answer_file, validate_answers
from grader.checking.own_runs import DECIDES, question_evidence, snapped_line
from grader.common.errors import UserError

REFERENCE_KINDS = ("optimum", "yesno")
REVIEW_NOTE = "provisional until an instructor reviews it"


def _read(name: str, path: Path | None) -> tuple[dict, dict | None, str | None]:
    """-> (the file's entry without questions, its parsed answers or None, why its answers are absent)."""
    entry = {"file": name, "path": str(path) if path else None, "found": path is not None,
             "readable": False, "valid": True, "errors": [], "questions": []}
    if path is None:
        return entry, None, f"{name} was not written"
    try:
        data = read_answer_file(path)
    except UserError as e:
        if e.exit_code != 1:
            raise
        entry.update(valid=False, errors=[str(e)])
        return entry, None, f"{name} could not be read"
    entry["errors"] = validate_answers(name, data)
    entry["valid"] = not entry["errors"]
    entry["readable"] = True
    return entry, parse_answers(name, data), None


def reference_files(spec, ref, targets: dict[str, Path | None], *, reveal: bool, counted: dict | None) -> list[dict]:
    """Scored against --reference as today; counted (the notebook's own runs) adds the evidence lines."""
    out = []
    for name, path in targets.items():
        entry, answers, absent = _read(name, path)
        for q in spec.questions_in(name):
            answer = answers.get(q.key) if answers else None
            scored = score_question(q, answer, ref.question(q.id), spec=spec, provenance=ref.provenance,
                                    hide=not reveal, absent=absent)
            label = "invalid" if answer is not None and answer.error else VERDICT_WORDS[scored["verdict"]]
            if q.kind == "yesno" and scored["review"]:
                label += ", reason needs review"
            item = {"id": q.id, "key": q.key, "label": label, **{k: scored[k] for k in
                    ("verdict", "points", "max", "review", "feedback")}}
            if reveal:
                item["expected"] = scored["expected"]
            if counted is not None and q.kind in REFERENCE_KINDS:
                own = question_evidence(q, spec, counted, answer)
                item.update(evidence=own["evidence"], coverage=own["coverage"], consistency=own["consistency"],
                            lines=own["lines"])
            entry["questions"].append(item)
        out.append(entry)
    return out


def self_files(spec, targets: dict[str, Path | None], *, counted: dict | None) -> list[dict]:
    """Judged without any reference: no verdict or points where the reference decides them."""
    out = []
    for name, path in targets.items():
        entry, answers, absent = _read(name, path)
        for q in spec.questions_in(name):
            answer = answers.get(q.key) if answers else None
            entry["questions"].append(_self_question(q, spec, answer, absent, counted))
        out.append(entry)
    return out


def _self_question(q, spec, answer, absent: str | None, counted: dict | None) -> dict:
    if answer is not None and answer.error:
        status, valid, reason = "invalid", False, answer.error.split(": ", 2)[-1]
    elif answer is None or not answer.answered:
        status, valid, reason = "not answered", None, absent
    else:
        status, valid, reason = "valid", True, None
    item = {"id": q.id, "key": q.key, "kind": q.kind, "status": status, "valid": valid, "reason": reason}
    if q.kind not in REFERENCE_KINDS:
        scored = score_question(q, answer, {}, spec=spec, provenance={}, hide=True, absent=absent)
        item.update(decided_by="rubric", lines=[scored["feedback"]],
                    **{k: scored[k] for k in ("points", "max", "review", "feedback")})
        return item
    lines = [line for line in (snapped_line(q, spec, answer), _reason_line(q, answer)) if line]
    item.update(decided_by="reference", max=float(q.points), evidence=None, coverage=None, consistency=None)
    if counted is not None:
        own = question_evidence(q, spec, counted, answer)
        item.update(evidence=own["evidence"], coverage=own["coverage"], consistency=own["consistency"])
        lines += own["lines"]
    item["lines"] = lines + [DECIDES]
    return item


def _reason_line(q, answer) -> str | None:
    """A yes/no answer's reason against the rubric, with no points and no word on the yes/no itself."""
    if q.kind != "yesno" or q.rubric is None or answer is None or not answer.answered or answer.error:
        return None
    reason = answer.value.reason
    if not reason:
        return "reason: none given after the yes/no"
    _, long_enough, enough = rubric_hits(reason, q.rubric)
    said = "meets the rubric" if long_enough and enough else "too short or misses the key ideas"
    return f"reason: {said}, {REVIEW_NOTE}"

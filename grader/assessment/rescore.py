"""Scoring without execution: a stored result's answer files scored again with the current spec and reference.

The store keeps each student's answer files as given (`answer_files` in the result), so a change of
the spec's scoring rules, rubric or the reference re-scores the class in milliseconds; only a change
of what the notebooks run (answer files, preamble, limits, data) executes them again.
"""

from __future__ import annotations

from grader.assessment.score import score_answers
from grader.assessment.validate import parse_answers

PRIVATE = ("answer_files",)


def rescore(result: dict, spec, ref, *, hide: bool = False) -> dict:
    """A new result scored from its stored answer files; a result stored without them is returned as is."""
    stored = result.get("answer_files")
    if not isinstance(stored, dict):
        return result
    files: dict = {}
    for name in spec.answer_files:
        entry = stored.get(name)
        files[name] = parse_answers(name, entry) if isinstance(entry, dict) else entry
    summary = result.get("runs_summary") if isinstance(result.get("runs_summary"), dict) else {}
    scored = score_answers(spec, ref, files, hide=hide, runs=result.get("runs"), evidence_source=summary.get("evidence"))
    return {**result, "questions": scored["questions"], "total": scored["total"], "max": scored["max"],
            "review": scored["review"]}


def public(result: dict) -> dict:
    """The result as results.json shows it: without the stored answer files."""
    return {k: v for k, v in result.items() if k not in PRIVATE}

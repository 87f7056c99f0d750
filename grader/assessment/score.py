"""Score parsed answers against a reference artifact, with one feedback sentence per question.

Rules (ASSIGNMENT-7b.md; every number comes from the spec or the artifact):
- optimum: an answer in the tie set earns full points; one grid step from it, near_fraction of
  them; else none. An answer off the grid is first snapped to the nearest grid value (in log
  scale when the spec says so and every value is positive), and the feedback says so.
- yesno: answer_points for the yes/no that matches the artifact's truth, plus the rest of the
  points for a reason meeting the rubric; flagged for manual review.
- text: provisional points from the rubric, flagged for manual review: full points when the
  answer is at least min_length characters long AND mentions at least min_keywords of the
  rubric's keywords (case-insensitive substrings); half when exactly one of the two holds; else 0.
Hidden mode (hide=True) says right, close or wrong, never the expected value or the rubric words.
"""

from __future__ import annotations

import math
from typing import Any

from grader.assessment.evidence import counted_runs, optimum_evidence, yesno_evidence
from grader.assessment.validate import Answer
from grader.common.names import display
from reference.spec import hyperparameter_value

VERDICTS = ("right", "partly", "wrong", "review", "missing")
VERDICT_WORDS = {"right": "right", "partly": "partly right", "wrong": "wrong", "review": "needs review",
                 "missing": "not answered"}
HYPERPARAMETER_WORDS = {"lr": "learning rate", "batch_size": "batch size", "momentum": "momentum"}
METRIC_WORDS = {
    "final_train_acc": "final training accuracy",
    "best_test_acc": "best test accuracy",
    "final_test_acc": "final test accuracy",
    "best_train_acc": "best training accuracy",
}
MAX_DEPTH = 20
REVIEW_NOTE = "provisional until an instructor reviews it"


def score_answers(spec, ref, files: dict[str, dict[str, Answer] | str | None], *, hide: bool = False,
                  runs: list[dict] | None = None, evidence_source: str | None = None) -> dict:
    """Every spec question scored: {"questions": {qid: result}, "total", "max", "review"}.

    files maps an answer file name to its parsed answers, or to a one-line reason it could not
    be used (not written, not JSON ...), or None when it was not written. runs: the student's runs
    record (grader/assessment/runs.py); evidence_source: which of its sources counts as evidence
    ("service" under grade), None for no evidence and no evidence rule.
    """
    counted = counted_runs(spec, runs, evidence_source)
    questions = {}
    for q in spec.questions:
        entry = files.get(q.file)
        if isinstance(entry, dict):
            answer, absent = entry.get(q.key), None
        else:
            answer, absent = None, entry or f"{q.file} was not written"
        questions[q.id] = score_question(q, answer, ref.question(q.id), spec=spec, provenance=ref.provenance,
                                         hide=hide, absent=absent, counted=counted, source=evidence_source)
    return {
        "questions": questions,
        "total": _round(sum(r["points"] for r in questions.values())),
        "max": _round(sum(r["max"] for r in questions.values())),
        "review": any(r["review"] for r in questions.values()),
    }


def score_question(q, answer: Answer | None, ref_q: dict, *, spec, provenance: dict, hide: bool = False,
                   absent: str | None = None, counted: dict | None = None, source: str | None = None) -> dict:
    """One question's points, verdict, answer as given, expected value and feedback sentence; with the
    student's counted runs (evidence.counted_runs), its evidence and the spec's evidence rules applied."""
    result = _score_question(q, answer, ref_q, spec=spec, provenance=provenance, hide=hide, absent=absent)
    if counted is None or not (q.kind == "optimum" or (q.kind == "yesno" and q.truth)):
        result["evidence"], result["evidence_rule"] = None, None
        return result
    usable = answer is not None and answer.answered and not answer.error
    if q.kind == "optimum":
        index = snap(float(answer.value), [float(g) for g in ref_q["grid"]], spec.snap)[0] if usable else None
        ev = optimum_evidence(q, spec, counted, source, index)
    else:
        ev = yesno_evidence(q, spec, counted, source, answer.value.yes if usable else None)
    result["evidence"], result["evidence_rule"] = ev, None
    if usable:
        _apply_evidence_rules(q, result, ev, spec, ref_q, provenance, hide)
    return result


def _score_question(q, answer: Answer | None, ref_q: dict, *, spec, provenance: dict, hide: bool = False,
                    absent: str | None = None) -> dict:
    raw = _jsonable(answer.raw) if answer is not None else None
    if answer is not None and answer.error:
        tail = answer.error.split(": ", 2)[-1]
        return _result(q, 0.0, "wrong", raw, ref_q, hide, False,
                       f"Not a valid answer: {tail}. {_earned(0, q.points)}.")
    if answer is None or not answer.answered:
        why = f" ({absent})" if absent else ""
        return _result(q, 0.0, "missing", raw, ref_q, hide, False, f"Not answered{why}: {_earned(0, q.points)}.")
    if q.kind == "optimum":
        return _score_optimum(q, answer.value, raw, ref_q, spec, provenance, hide)
    if q.kind == "yesno":
        return _score_yesno(q, answer.value, raw, ref_q, hide)
    return _score_text(q, answer.value, raw, ref_q, hide)


def expected_value(q, ref_q: dict):
    """What the reference expects, as plain JSON: the tie set, the yes/no truth, or None for free text."""
    if q.kind == "optimum":
        return [hyperparameter_value(ref_q.get("vary"), v) for v in ref_q.get("tie_set", [])]
    if q.kind == "yesno":
        return ref_q.get("truth")
    return None


def _result(q, points, verdict, raw, ref_q, hide, review, feedback) -> dict:
    return {
        "points": _round(points),
        "max": _round(q.points),
        "verdict": verdict,
        "answer": raw,
        "expected": None if hide else expected_value(q, ref_q),
        "feedback": feedback,
        "review": review,
    }


# evidence rules --------------------------------------------------------------------------------

def _apply_evidence_rules(q, result: dict, ev: dict, spec, ref_q: dict, provenance: dict, hide: bool) -> None:
    """The spec's two rules: an answer that is the best of the student's own complete runs earns at least
    own_runs_fraction of the points (of the yes/no part for a yes/no question); an optimum the notebook never
    trained is flagged for review."""
    fraction = spec.own_runs_fraction
    if q.kind == "optimum" and ev["answer_tried"] is False and spec.flag_untried:
        noun = HYPERPARAMETER_WORDS.get(ev["vary"], ev["vary"])
        result["review"], result["evidence_rule"] = True, "untried"
        result["feedback"] += (f" Your notebook never trained {noun} {_num(ev['answer'])} with the sweep's "
                               f"fixed values for {spec.epochs} epochs, so your own runs do not back this answer: "
                               "flagged for an instructor's review.")
        return
    if fraction <= 0 or not (ev["agrees"] and ev["complete"]):
        return
    if q.kind == "optimum" and result["verdict"] in ("partly", "wrong") and q.points * fraction > result["points"]:
        result["points"] = _round(q.points * fraction)
        result["verdict"], result["evidence_rule"] = "partly", "own-runs"
        result["feedback"] += " " + _own_runs_sentence(q, ev, ref_q, spec, provenance, hide, result["points"])
    elif q.kind == "yesno" and result["parts"]["answer"] == 0 and q.answer_points > 0:
        part = _round(q.answer_points * fraction)
        result["parts"]["answer"] = part
        result["points"] = _round(result["points"] + part)
        result["verdict"], result["evidence_rule"] = "partly", "own-runs"
        said = "yes" if ev["own_truth"] else "no"
        result["feedback"] += (f" Your own complete runs say '{said}', as you did: {_earned(part, q.answer_points)} "
                               "for following them.")


def _own_runs_sentence(q, ev: dict, ref_q: dict, spec, provenance: dict, hide: bool, points: float) -> str:
    earned = _earned(points, q.points)
    if hide:
        return f"Your answer is the best of your own complete runs, though not the reference's: {earned}."
    n = len(provenance.get("seeds", [])) or "several"
    ties = ref_q.get("tie_set", [])
    verb = "finds" if len(ties) != 1 else "finds only"
    return (f"Your own runs over the whole grid pointed to {_num(ev['own_best'])}, as your answer does; over {n} seeds "
            f"the reference {verb} {_set(ties)} best, and {_num(ev['own_best'])} is not within "
            f"{_num(ref_q.get('z', spec.z))} standard errors of it: {earned} for following your own runs.")


# optimum ---------------------------------------------------------------------------------------

def snap(value: float, grid: list[float], mode: str = "log") -> tuple[int, bool]:
    """Index of the grid value an answer stands for, and whether it had to be snapped."""
    for i, g in enumerate(grid):
        if math.isclose(value, g, rel_tol=1e-9, abs_tol=0.0):
            return i, False
    use_log = mode == "log" and value > 0 and all(g > 0 for g in grid)
    if use_log:
        def distance(g):
            return abs(math.log(value) - math.log(g))
    else:
        def distance(g):
            return abs(value - g)
    return min(range(len(grid)), key=lambda i: (distance(grid[i]), i)), True


def grid_steps(index: int, grid: list[float], tie_set: list[float]) -> int | None:
    """Grid steps from an index to the nearest member of the tie set (None for an empty tie set)."""
    ties = [i for i, g in enumerate(grid) if any(math.isclose(g, t, rel_tol=1e-9) for t in tie_set)]
    return min(abs(index - t) for t in ties) if ties else None


def _score_optimum(q, value, raw, ref_q, spec, provenance, hide) -> dict:
    grid = [float(g) for g in ref_q["grid"]]
    tie_set = [float(t) for t in ref_q["tie_set"]]
    index, snapped = snap(float(value), grid, spec.snap)
    steps = grid_steps(index, grid, tie_set)
    if steps == 0:
        fraction, verdict = 1.0, "right"
    elif steps == 1:
        fraction, verdict = spec.near_fraction, "partly" if spec.near_fraction > 0 else "wrong"
    else:
        fraction, verdict = 0.0, "wrong"
    points = q.points * fraction
    sentences = []
    if snapped:
        scale = " in log scale" if spec.snap == "log" and float(value) > 0 else ""
        sentences.append(f"{_num(value)} is not on the grid; it was snapped to {_num(grid[index])}, "
                         f"the nearest grid value{scale}.")
    earned = _earned(points, q.points)
    if hide:
        outcome = {"right": "Your answer is right", "partly": "Your answer is close (one grid step away)",
                   "wrong": "Your answer is wrong"}[verdict]
        sentences.append(f"{outcome}: {earned}.")
    else:
        sentences.append(_optimum_explanation(ref_q, provenance))
        shown = _num(grid[index])
        where = ("is in the tie set" if steps == 0 else "is one grid step from the tie set" if steps == 1
                 else f"is {steps} grid steps from the tie set" if steps is not None else "cannot be placed")
        sentences.append(f"Your answer {shown} {where}: {earned}.")
    return _result(q, points, verdict, raw, ref_q, hide, False, " ".join(sentences))


def _optimum_explanation(ref_q: dict, provenance: dict) -> str:
    """Why the tie set is what it is, from the artifact's table: means, standard errors, seeds, data."""
    noun = HYPERPARAMETER_WORDS.get(ref_q.get("vary"), ref_q.get("vary", "value"))
    metric = METRIC_WORDS.get(ref_q.get("metric"), ref_q.get("metric", "metric"))
    tie_set, best = ref_q.get("tie_set", []), ref_q.get("best")
    row = next((r for r in ref_q.get("table", []) if best is not None and math.isclose(r["value"], best, rel_tol=1e-9)), None)
    if row is None:
        return ref_q.get("explanation") or f"Expected a {noun} in the tie set {_set(tie_set)}."
    n = row.get("n") or len(provenance.get("seeds", [])) or "?"
    kind = provenance.get("data", {}).get("kind")
    data = {"synthetic": ", synthetic data", "real": ", Fashion-MNIST"}.get(kind, "")
    how = f"({n} seed{'s' if n != 1 else ''}{data})"
    z = ref_q.get("z", 2.0)
    stat = f"{row['mean']:.3f} ± {row['se']:.3f}"
    if len(tie_set) > 1:
        return (f"Expected a {noun} in the tie set {_set(tie_set)}: their mean {metric} {how} is within "
                f"{_num(z)} standard errors of the best, {_num(best)} ({stat}).")
    return (f"Expected a {noun} of {_num(best)}: its mean {metric} {how}, {stat}, is the best, "
            f"and no other value is within {_num(z)} standard errors of it.")


# yes/no and free text --------------------------------------------------------------------------

def rubric_hits(text: str, rubric) -> tuple[list[str], bool, bool]:
    """Keywords found (case-insensitive substrings), whether long enough, whether enough keywords."""
    low = text.lower()
    hits = [k for k in rubric.keywords if k in low]
    return hits, len(text.strip()) >= rubric.min_length, len(hits) >= rubric.min_keywords


def _score_yesno(q, value, raw, ref_q, hide) -> dict:
    truth = bool(ref_q["truth"])
    reason_points_max = q.points - q.answer_points
    answer_ok = value.yes == truth
    hits, long_enough, enough = rubric_hits(value.reason, q.rubric)
    reason_ok = bool(value.reason) and long_enough and enough
    points = (q.answer_points if answer_ok else 0.0) + (reason_points_max if reason_ok else 0.0)
    verdict = "right" if points >= q.points else "partly" if points > 0 else "wrong"
    said = "yes" if value.yes else "no"
    sentences = []
    if hide:
        sentences.append(f"Your yes/no is {'right' if answer_ok else 'wrong'}: "
                         f"{_earned(q.answer_points if answer_ok else 0, q.answer_points)}.")
    else:
        why = ref_q.get("explanation", "").strip()
        sentences.append(f"Expected '{'yes' if truth else 'no'}'{': ' + why if why else '.'}"
                         + ("" if not why or why.endswith(".") else "."))
        sentences.append(f"Your '{said}' is {'right' if answer_ok else 'wrong'}: "
                         f"{_earned(q.answer_points if answer_ok else 0, q.answer_points)}.")
    if reason_points_max > 0:
        sentences.append(_reason_sentence(value.reason, hits, long_enough, enough, q.rubric, hide,
                                          reason_points_max if reason_ok else 0.0, reason_points_max))
    result = _result(q, points, verdict, raw, ref_q, hide, True, " ".join(sentences))
    result["parts"] = {"answer": _round(q.answer_points if answer_ok else 0.0),
                       "reason": _round(reason_points_max if reason_ok else 0.0)}
    return result


def _reason_sentence(reason, hits, long_enough, enough, rubric, hide, got, out_of) -> str:
    earned = f"{_earned(got, out_of)}, {REVIEW_NOTE}"
    if not reason:
        return f"No reason was given after the yes/no: {earned}."
    if long_enough and enough:
        return f"Your reason meets the rubric: {earned}."
    if hide:
        return f"Your reason is too short or misses the key ideas: {earned}."
    return f"Your reason {_shortfall(reason, hits, long_enough, enough, rubric)}: {earned}."


def _score_text(q, value, raw, ref_q, hide) -> dict:
    hits, long_enough, enough = rubric_hits(value, q.rubric)
    fraction = 1.0 if long_enough and enough else 0.5 if long_enough or enough else 0.0
    points = q.points * fraction
    earned = f"{_earned(points, q.points)}, {REVIEW_NOTE}"
    if long_enough and enough:
        feedback = f"Your answer meets the rubric: {earned}."
    elif hide:
        feedback = f"Your answer is {'too short' if not long_enough else 'missing some key ideas'}: {earned}."
    else:
        feedback = f"Your answer {_shortfall(value, hits, long_enough, enough, q.rubric)}: {earned}."
    return _result(q, points, "review", raw, ref_q, hide, True, feedback)


def _shortfall(text, hits, long_enough, enough, rubric) -> str:
    parts = []
    if not long_enough:
        parts.append(f"is {len(text.strip())} characters long (at least {rubric.min_length} wanted)")
    if not enough:
        named = ", ".join(rubric.keywords)
        parts.append(f"mentions {len(hits)} of the key ideas (at least {rubric.min_keywords} wanted, e.g. {named})")
    return " and ".join(parts)


# formatting ------------------------------------------------------------------------------------

def _jsonable(value: Any, depth: int = 0):
    """A student's raw answer as storable JSON: valid Unicode, finite numbers, at most MAX_DEPTH levels."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return display(value)
    if isinstance(value, (dict, list)) and depth >= MAX_DEPTH:
        return f"(a {'list' if isinstance(value, list) else 'mapping'} nested more than {MAX_DEPTH} levels deep)"
    if isinstance(value, dict):
        return {display(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v, depth + 1) for v in value]
    return value


def _round(x: float) -> float:
    return round(float(x), 6)


def _pts(x: float) -> str:
    return f"{_round(x):g}"


def _earned(got: float, out_of: float) -> str:
    return f"{_pts(got)} of {_pts(out_of)} point{'' if _round(out_of) == 1 else 's'}"


def _num(x) -> str:
    return f"{float(x):g}"


def _set(values) -> str:
    return "{" + ", ".join(_num(v) for v in values) + "}"

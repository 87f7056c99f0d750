"""Scoring against a hand-made artifact whose tie sets and truths are known (tests/grader_fixtures.py)."""

import dataclasses
import re

import pytest

from grader.assessment.score import rubric_hits, score_answers, score_question, snap
from grader.assessment.validate import parse_answers
from grader_fixtures import TIE_SETS, make_artifact, reference_object
from reference.spec import load_spec

SPEC = load_spec()
REF = reference_object()


def score(qid: str, value, *, hide=False, spec=SPEC, ref=REF):
    q = spec.question(qid)
    answer = parse_answers(q.file, {q.key: value})[q.key]
    return score_question(q, answer, ref.question(qid), spec=spec, provenance=ref.provenance, hide=hide)


def test_the_fixture_tie_sets_follow_the_design_rule():
    art = make_artifact()
    for qid, tie in TIE_SETS.items():
        rq = art["questions"][qid]
        best = max(rq["table"], key=lambda r: r["mean"])
        ties = [r["value"] for r in rq["table"]
                if best["mean"] - r["mean"] <= rq["z"] * (best["se"] ** 2 + r["se"] ** 2) ** 0.5]
        assert ties == tie, qid


def test_an_answer_in_the_tie_set_gets_full_points_and_says_why():
    for value in ("0.1", "0.2", 0.2, "1e-1"):
        r = score("ex1.a", value)
        assert (r["points"], r["max"], r["verdict"], r["review"]) == (2, 2, "right", False)
    assert r["expected"] == [0.1, 0.2]
    assert r["feedback"].startswith(
        "Expected a learning rate in the tie set {0.1, 0.2}: their mean final training accuracy "
        "(3 seeds, synthetic data) is within 2 standard errors of the best, 0.1 (0.934 ± 0.001).")
    assert r["feedback"].endswith("Your answer 0.1 is in the tie set: 2 of 2 points.")


def test_a_single_optimum_is_explained_as_such():
    r = score("ex1.c", "32")
    assert r["verdict"] == "right" and r["expected"] == [32]
    assert "Expected a batch size of 32: its mean final training accuracy (3 seeds, synthetic data), 0.950 ± 0.001, is the best" in r["feedback"]


def test_one_grid_step_from_the_tie_set_gets_near_fraction():
    for qid, value in (("ex1.a", "0.3"), ("ex1.a", 0.03), ("ex1.c", " 64 "), ("ex2.b", 128)):
        r = score(qid, value)
        assert (r["points"], r["verdict"]) == (1, "partly"), (qid, value)
    assert score("ex1.a", "0.3")["feedback"].endswith("Your answer 0.3 is one grid step from the tie set: 1 of 2 points.")


def test_near_fraction_comes_from_the_spec():
    spec = dataclasses.replace(SPEC, near_fraction=0.25)
    assert score("ex1.a", "0.3", spec=spec)["points"] == 0.5


def test_far_answers_get_nothing():
    r = score("ex1.a", "0.001")
    assert (r["points"], r["verdict"]) == (0, "wrong")
    assert r["feedback"].endswith("Your answer 0.001 is 4 grid steps from the tie set: 0 of 2 points.")


def test_off_grid_answers_are_snapped_in_log_scale_and_the_feedback_says_so():
    r = score("ex1.a", "0.15")
    assert r["feedback"].startswith("0.15 is not on the grid; it was snapped to 0.2, the nearest grid value in log scale.")
    assert (r["points"], r["verdict"], r["answer"]) == (2, "right", "0.15")
    r = score("ex1.a", "0.25")
    assert "snapped to 0.3, the nearest grid value in log scale" in r["feedback"]
    assert r["verdict"] == "partly"
    r = score("ex1.c", "100")
    assert "100 is not on the grid; it was snapped to 128" in r["feedback"] and r["verdict"] == "wrong"


def test_snap_in_log_and_linear_scale():
    grid = [0.1, 0.2, 0.3]
    assert snap(0.25, grid, "log") == (2, True)
    assert snap(0.25, grid, "linear") == (1, True)
    assert snap(0.2, grid, "log") == (1, False)
    assert snap(5.0, grid, "log") == (2, True)
    spec = dataclasses.replace(SPEC, snap="linear")
    assert "snapped to 0.2, the nearest grid value." in score("ex1.a", "0.25", spec=spec)["feedback"]


def test_yes_no_scores_the_answer_and_the_reason_separately_and_asks_for_review():
    right = score("ex1.b", "No: the test optimum was a smaller rate; at 0.1 the model overfits a little")
    assert (right["points"], right["verdict"], right["review"], right["expected"]) == (2, "right", True, False)
    assert right["feedback"].startswith("Expected 'no': the test-optimal learning rate 0.03 is outside the training tie set {0.1, 0.2}.")
    assert "Your 'no' is right: 1 of 1 point." in right["feedback"]
    assert "Your reason meets the rubric: 1 of 1 point, provisional until an instructor reviews it." in right["feedback"]

    wrong_with_reason = score("ex1.b", "Yes, because there is no generalization gap at all")
    assert (wrong_with_reason["points"], wrong_with_reason["verdict"]) == (1, "partly")
    assert "Your 'yes' is wrong: 0 of 1 point." in wrong_with_reason["feedback"]

    bare = score("ex1.b", "no")
    assert (bare["points"], bare["verdict"], bare["review"]) == (1, "partly", True)
    assert "No reason was given after the yes/no: 0 of 1 point" in bare["feedback"]

    short = score("ex1.b", "No, overfit")
    assert short["points"] == 1
    assert "is 7 characters long (at least 20 wanted)" in short["feedback"]

    no_keyword = score("ex1.b", "No, because the curves simply looked different to me")
    assert no_keyword["points"] == 1 and "mentions 0 of the key ideas (at least 1 wanted" in no_keyword["feedback"]

    assert score("ex1.b", True)["points"] == 0 and score("ex1.b", True)["verdict"] == "wrong"
    assert score("ex2.c", True)["points"] == 1


def test_rubric_keywords_are_case_insensitive_substrings():
    hits, long_enough, enough = rubric_hits("Overfitting reduces GENERALIZATION", SPEC.question("ex1.b").rubric)
    assert hits == ["overfit", "generaliz"] and long_enough and enough


@pytest.mark.parametrize("text, points", [
    ("Each update takes a larger step, so more progress per iteration and gradient noise helps escape.", 2),
    ("bigger steps, more updates", 1),
    ("Because it goes faster than the other one does in all of these experiments.", 1),
    ("it is faster", 0),
])
def test_free_text_gets_provisional_points_and_always_review(text, points):
    r = score("ex1.d", text)
    assert (r["points"], r["verdict"], r["review"], r["expected"]) == (points, "review", True, None)
    assert r["feedback"].endswith(f"{points} of 2 points, provisional until an instructor reviews it.")


def test_not_answered_and_invalid_answers_score_zero():
    for value in ("", "  ", None):
        r = score("ex1.a", value)
        assert (r["points"], r["verdict"], r["review"]) == (0, "missing", False)
        assert r["feedback"] == "Not answered: 0 of 2 points."
    r = score("ex1.a", "0.1x")
    assert (r["points"], r["verdict"], r["answer"]) == (0, "wrong", "0.1x")
    assert r["feedback"] == 'Not a valid answer: "0.1x" is not a number. 0 of 2 points.'


def test_score_answers_totals_and_says_why_a_file_is_missing():
    ex1 = parse_answers("7b_ex1.json", {"a": "0.2", "b": "no", "c": "64", "d": ""})
    result = score_answers(SPEC, REF, {"7b_ex1.json": ex1, "7b_ex2.json": None})
    qs = result["questions"]
    assert list(qs) == [q.id for q in SPEC.questions]
    assert [qs[q]["points"] for q in ("ex1.a", "ex1.b", "ex1.c", "ex1.d")] == [2, 1, 1, 0]
    assert qs["ex2.a"]["feedback"] == "Not answered (7b_ex2.json was not written): 0 of 2 points."
    assert (result["total"], result["max"], result["review"]) == (4, 16, True)
    broken = score_answers(SPEC, REF, {"7b_ex1.json": "7b_ex1.json: is not valid JSON: Expecting value"})
    assert broken["questions"]["ex1.a"]["feedback"] == "Not answered (7b_ex1.json: is not valid JSON: Expecting value): 0 of 2 points."


ANSWERS = {
    "ex1.a": ["0.1", "0.3", "0.001", "0.15", "0.7"],
    "ex1.b": ["No, it overfits at the train optimum", "yes, the generalization gap is small", True, "no"],
    "ex1.c": ["32", "64", "1024", "100"],
    "ex1.d": ["noise and larger steps: more updates per epoch", "fast"],
    "ex2.a": ["0.03", "0.1", "0.5"],
    "ex2.b": ["64", "32", "16"],
    "ex2.c": ["Yes: the noise regularizes", "no", False],
    "ex2.d": ["random noise regularizes like dropout", "same"],
}


def test_hidden_answers_never_show_the_expected_value_or_the_rubric():
    art = REF.data
    for qid, values in ANSWERS.items():
        q = SPEC.question(qid)
        rq = art["questions"][qid]
        for value in values:
            r = score(qid, value, hide=True)
            assert r["expected"] is None
            text = r["feedback"]
            assert not re.search(r"\bexpected\b|tie set|\{", text, re.IGNORECASE), text
            if q.kind == "optimum":
                answered = parse_answers(q.file, {q.key: value})[q.key].value
                snapped = snap(float(answered), [float(g) for g in rq["grid"]], SPEC.snap)
                shown = {f"{float(rq['grid'][snapped[0]]):g}", f"{float(answered):g}"} if snapped[1] else set()
                for t in rq["tie_set"]:
                    if f"{float(t):g}" not in shown:
                        assert not re.search(rf"(?<![\d.]){re.escape(f'{float(t):g}')}(?![\d])", text), (qid, value, text)
                assert f"{rq['table'][0]['mean']:.3f}" not in text
            if q.kind == "yesno":
                assert "'yes'" not in text and "'no'" not in text
                assert rq["explanation"] not in text
            if q.rubric:
                assert not any(k in text.lower() for k in q.rubric.keywords if len(k) > 4 and k not in str(value).lower()), text
            assert r["verdict"] in ("right", "partly", "wrong", "review", "missing")


def test_hidden_feedback_still_says_right_close_or_wrong():
    assert score("ex1.a", "0.1", hide=True)["feedback"] == "Your answer is right: 2 of 2 points."
    assert score("ex1.a", "0.3", hide=True)["feedback"] == "Your answer is close (one grid step away): 1 of 2 points."
    assert score("ex1.a", "0.001", hide=True)["feedback"] == "Your answer is wrong: 0 of 2 points."
    assert score("ex1.b", "yes", hide=True)["feedback"].startswith("Your yes/no is wrong: 0 of 1 point.")

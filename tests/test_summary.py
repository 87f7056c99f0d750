import json

import pytest

from fakes import GOOD_ANSWERS, WRONG_ANSWERS, Page, decode_png, fake_result
from grader.assessment.overrides import Override, apply_overrides
from grader.reports.summary import class_summary, render_summary_html


@pytest.fixture(scope="module")
def results(sp, ref):
    """ann right (14), bob wrong (1), cid mixed with off-grid answers (4), dan crashed (0),
    eve copied ann's texts and answered ex2.b with 128 (13)."""
    return [
        fake_result("ann", GOOD_ANSWERS, sp=sp, ref=ref),
        fake_result("bob", WRONG_ANSWERS, sp=sp, ref=ref),
        fake_result("cid", {**WRONG_ANSWERS, "ex1.a": "0.15", "ex1.c": "48", "ex2.a": "", "ex2.b": "lots"},
                    sp=sp, ref=ref),
        fake_result("dan", {}, sp=sp, ref=ref, status="error", reason="cell 3 raised"),
        fake_result("eve", {**GOOD_ANSWERS, "ex2.b": 128}, sp=sp, ref=ref),
    ]


@pytest.fixture(scope="module")
def summary(sp, ref, results):
    return class_summary(results, sp, ref)


def _at(data, path: str):
    for part in path.split("/"):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def test_score_distribution(results, summary):
    assert [r["total"] for r in results] == [14.0, 1.0, 4.0, 0.0, 13.0]
    s = summary["scores"]
    assert (s["count"], s["mean"], s["median"], s["min"], s["max"]) == (5, 6.4, 4.0, 0.0, 14.0)
    assert s["histogram"]["edges"] == [float(e) for e in range(17)]
    counts = s["histogram"]["counts"]
    assert sum(counts) == 5
    assert {i: c for i, c in enumerate(counts) if c} == {0: 1, 1: 1, 4: 1, 13: 1, 14: 1}
    assert summary["max"] == 16.0


def test_full_marks_land_in_the_last_bin(sp, ref):
    perfect = fake_result("max", GOOD_ANSWERS, sp=sp, ref=ref)
    perfect["total"] = 16.0
    counts = class_summary([perfect], sp, ref)["scores"]["histogram"]["counts"]
    assert counts[-1] == 1 and sum(counts) == 1


def test_status_and_per_question_counts(summary):
    assert summary["status"] == {"error": 1, "graded": 4}
    a = summary["questions"]["ex1.a"]
    assert a["n"] == 4 and a["points_mean"] == 1.25
    assert a["verdicts"] == {"right": 2, "partly": 1, "wrong": 1, "review": 0, "missing": 0}
    d = summary["questions"]["ex1.d"]
    assert d["verdicts"]["review"] == 2 and d["verdicts"]["missing"] == 2 and d["points_mean"] == 1.0
    b2 = summary["questions"]["ex2.b"]
    assert b2["verdicts"] == {"right": 1, "partly": 1, "wrong": 2, "review": 0, "missing": 0}


def test_answer_distribution_snaps_and_marks_the_tie_set(summary):
    a = summary["questions"]["ex1.a"]["answers"]
    counts = {r["value"]: r["count"] for r in a["grid"]}
    assert counts == {0.001: 0, 0.003: 0, 0.01: 1, 0.03: 0, 0.1: 0, 0.2: 1, 0.3: 0, 0.5: 2, 1.0: 0}
    assert [r["value"] for r in a["grid"] if r["in_tie_set"]] == [0.3, 0.5]
    assert [r["value"] for r in a["grid"] if r["best"]] == [0.5]
    assert (a["unanswered"], a["unreadable"], a["snapped"]) == (0, 0, 1)
    c = summary["questions"]["ex1.c"]["answers"]
    assert {r["value"]: r["count"] for r in c["grid"] if r["count"]} == {32: 2, 64: 1, 1024: 1}
    b2 = summary["questions"]["ex2.b"]["answers"]
    assert {r["value"]: r["count"] for r in b2["grid"] if r["count"]} == {128: 1, 256: 1, 1024: 1}
    assert b2["unreadable"] == 1
    assert summary["questions"]["ex2.a"]["answers"]["unanswered"] == 1
    assert "answers" not in summary["questions"]["ex1.b"]


def test_review_queue_and_similar_pairs(summary):
    assert [r["student"] for r in summary["review"]] == ["ann", "bob", "cid", "eve"]
    assert summary["review"][0]["questions"] == ["ex1.b", "ex1.d", "ex2.c", "ex2.d"]
    pairs = {(p["student_a"], p["student_b"], p["question"]) for p in summary["similar"]}
    assert pairs == {("ann", "eve", q) for q in ("ex1.b", "ex1.d", "ex2.c", "ex2.d")}
    assert summary["similarity"]["threshold"] == 0.9 and "TF-IDF" in summary["similarity"]["measure"]


def test_overrides_show_up_in_the_summary(sp, ref, results):
    changed = [apply_overrides(r, [Override("ann", "ex1.d", 0.0, "copied", 2)], sp) for r in results]
    s = class_summary(changed, sp, ref)
    assert s["questions"]["ex1.d"]["overridden"] == 1
    assert s["questions"]["ex1.d"]["verdicts"]["wrong"] == 1
    assert s["scores"]["max"] == 13.0


def test_json_and_html_show_the_same_numbers(summary):
    assert json.loads(json.dumps(summary)) == summary
    page = Page(render_summary_html(summary))
    assert page.problems == []
    cells = page.cells()
    wanted = ["scores/count", "scores/mean", "scores/median", "scores/min", "scores/max", "status/error",
              "status/graded", "questions/ex1.a/points_mean", "questions/ex1.a/verdicts/right",
              "questions/ex1.a/answers/grid/7/count", "questions/ex2.b/answers/unreadable", "similar/0/score"]
    assert set(wanted) <= set(cells)
    assert len(cells) > 100
    for key, shown in cells.items():
        value = _at(summary, key)
        if value is None:
            assert shown == "—", key
        else:
            assert float(shown) == pytest.approx(value, abs=0), key
    for key in ("scores/histogram/counts/13", "questions/ex1.c/answers/grid/1/count"):
        assert cells[key] == str(_at(summary, key))


def test_html_has_histogram_and_a_chart_per_numeric_question(sp, summary):
    page = Page(render_summary_html(summary))
    assert len(page.images) == 1 + sum(q.kind == "optimum" for q in sp.questions)
    for src, _ in page.images:
        assert decode_png(src).ndim == 3
    assert {q for _, q in page.images if q} == {q.id for q in sp.questions if q.kind == "optimum"}
    for tag, attrs in page.starts:
        assert tag not in ("script", "link")
        assert all(attrs[k].startswith("data:image/png;base64,") for k in ("src", "href") if k in attrs)


def test_hostile_names_are_escaped(sp, ref):
    evil = "<script>alert(1)</script>"
    results = [fake_result(evil, GOOD_ANSWERS, sp=sp, ref=ref), fake_result("x" + evil, GOOD_ANSWERS, sp=sp, ref=ref)]
    html = render_summary_html(class_summary(results, sp, ref))
    assert evil not in html and "&lt;script&gt;" in html
    page = Page(html)
    assert "script" not in {tag for tag, _ in page.starts}
    assert evil in page.text


def test_empty_class(sp, ref):
    s = class_summary([], sp, ref)
    assert s["scores"]["count"] == 0 and s["scores"]["mean"] is None
    assert s["status"] == {} and s["similar"] == [] and s["review"] == []
    assert all(q["n"] == 0 and q["points_mean"] is None for q in s["questions"].values())
    page = Page(render_summary_html(s))
    assert page.problems == [] and page.cells()["scores/mean"] == "—"

import re

import nbformat
import pytest

from fakes import (GOOD_ANSWERS, WRONG_ANSWERS, Page, decode_png, error_notebook, fake_result)
from grader.reports.feedback_html import optimum_plot, render_feedback_html
from grader.assessment.overrides import Override, apply_overrides
from grader.execution.traceback_trim import failing_cell, trim_frames

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def wrong(sp, ref):
    return fake_result("bob", WRONG_ANSWERS, sp=sp, ref=ref)


@pytest.fixture(scope="module")
def wrong_pages(sp, ref, wrong):
    return {hide: render_feedback_html(wrong, sp, ref, hide_answers=hide) for hide in (False, True)}


def _value_pattern(value: float) -> re.Pattern:
    text = f"{float(value):g}"
    return re.compile(rf"(?<![\d.]){re.escape(text)}(?![\d])")


def _optimum_ids(sp):
    return [q.id for q in sp.questions if q.kind == "optimum"]


@pytest.mark.parametrize("hide", [False, True])
@pytest.mark.parametrize("answers", [GOOD_ANSWERS, WRONG_ANSWERS], ids=["good", "wrong"])
def test_every_question_shown_and_each_numeric_one_has_a_decodable_png(sp, ref, answers, hide):
    result = fake_result("ann", answers, sp=sp, ref=ref)
    page = Page(render_feedback_html(result, sp, ref, hide_answers=hide))
    assert page.problems == []
    assert page.qids() == [q.id for q in sp.questions]
    for q in sp.questions:
        assert q.id in page.text_of(q.id)
        assert q.prompt in page.text_of(q.id)
        images = [src for src, qid in page.images if qid == q.id]
        if q.kind == "optimum":
            assert len(images) == 1
            pixels = decode_png(images[0])
            assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
        else:
            assert images == []


def test_page_is_self_contained(wrong_pages):
    for html in wrong_pages.values():
        page = Page(html)
        tags = {tag for tag, _ in page.starts}
        assert "script" not in tags and "link" not in tags and "iframe" not in tags
        for tag, attrs in page.starts:
            for name in ("src", "href"):
                if name in attrs:
                    assert attrs[name].startswith("data:image/png;base64,"), (tag, attrs[name][:40])
        csp = [a for tag, a in page.starts if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
        assert csp and "default-src 'none'" in csp[0]["content"]


def test_shows_answer_points_verdict_expected_and_why(sp, ref, wrong_pages):
    page = Page(wrong_pages[False])
    a = page.text_of("ex1.a")
    assert "0.01" in a and "0 / 2" in a and "wrong" in a
    assert "Expected:" in a and "{0.3, 0.5}" in a and "best: 0.5" in a
    b = page.text_of("ex1.b")
    assert "Expected: no, with a reason." in b
    assert ref["questions"]["ex1.b"]["explanation"] in b
    assert "manual review" in b


def test_hide_answers_leaves_no_expected_values(sp, ref, wrong, wrong_pages):
    shown, hidden = Page(wrong_pages[False]), Page(wrong_pages[True])
    for qid in _optimum_ids(sp):
        qref = ref["questions"][qid]
        secrets = {float(qref["best"]), *map(float, qref["tie_set"])}
        assert all(_value_pattern(v).search(shown.text_of(qid)) for v in secrets), qid
        assert not any(_value_pattern(v).search(hidden.text) for v in secrets), qid
        assert len([src for src, q in hidden.images if q == qid]) == 1
    for qid, qref in ref["questions"].items():
        if qref.get("explanation"):
            assert qref["explanation"] not in hidden.text
        if wrong["questions"][qid]["verdict"] != "missing":
            assert wrong["questions"][qid]["feedback"] not in hidden.text
    assert "Expected:" not in hidden.text and "tie set" not in hidden.text
    assert "wrong" in hidden.text_of("ex1.a") and "0 / 2" in hidden.text_of("ex1.a")


def test_hidden_figure_plots_only_the_students_choice(sp, ref, wrong):
    for qid in _optimum_ids(sp):
        q = sp.question(qid)
        choice = float(wrong["questions"][qid]["answer"])
        shown = optimum_plot(q, wrong["questions"][qid], sp, ref, hide_answers=False)
        hidden = optimum_plot(q, wrong["questions"][qid], sp, ref, hide_answers=True)
        assert set(shown["curves"]) == {choice, float(ref["questions"][qid]["best"])}
        assert shown["table"] and shown["tie_set"]
        assert set(hidden["curves"]) == {choice}
        assert hidden["best"] is None and hidden["tie_set"] == [] and hidden["table"] == []


def test_curves_are_seed_means_of_the_metric_relevant_history(sp, ref, wrong):
    train = optimum_plot(sp.question("ex1.a"), wrong["questions"]["ex1.a"], sp, ref, hide_answers=False)
    runs = [r for r in ref["runs"] if r["config"] == {"lr": 0.01, "batch_size": 128, "momentum": 0.9}]
    assert len(runs) == 3
    expect = [sum(r["history"]["acc"][e] for r in runs) / 3 for e in range(10)]
    assert train["curves"][0.01] == pytest.approx(expect)
    test = optimum_plot(sp.question("ex2.a"), wrong["questions"]["ex2.a"], sp, ref, hide_answers=False)
    runs = [r for r in ref["runs"] if r["config"] == {"lr": 0.003, "batch_size": 128, "momentum": 0.9}]
    assert test["curves"][0.003] == pytest.approx([sum(r["history"]["test_acc"][e] for r in runs) / 3
                                                   for e in range(10)])


def test_off_grid_answer_is_snapped_and_said_so(sp, ref):
    result = fake_result("cid", {**WRONG_ANSWERS, "ex1.a": "0.15"}, sp=sp, ref=ref)
    page = Page(render_feedback_html(result, sp, ref, hide_answers=True))
    assert "0.15 is not on the grid" in page.text_of("ex1.a")
    assert "graded as 0.2" in page.text_of("ex1.a")
    plot = optimum_plot(sp.question("ex1.a"), result["questions"]["ex1.a"], sp, ref, hide_answers=True)
    assert list(plot["curves"]) == [0.2]


@pytest.mark.parametrize("hide", [False, True])
def test_hostile_text_is_escaped(sp, ref, hide):
    result = fake_result(f"eve{HOSTILE}", {**GOOD_ANSWERS, "ex1.d": HOSTILE, "ex2.c": f"yes {HOSTILE}"}, sp=sp, ref=ref)
    html = render_feedback_html(result, sp, ref, hide_answers=hide)
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    page = Page(html)
    assert page.problems == []
    assert "script" not in {tag for tag, _ in page.starts}
    assert HOSTILE in page.text_of("ex1.d")
    assert HOSTILE in page.text


def test_error_result_shows_the_traceback_trimmed_to_student_code(sp, ref, tmp_path):
    path = tmp_path / "executed.ipynb"
    nbformat.write(error_notebook(), str(path))
    result = fake_result("dan", {}, sp=sp, ref=ref, status="error", reason="cell 3 raised RuntimeError",
                         executed=str(path))
    for html in (render_feedback_html(result, sp, ref),
                 render_feedback_html({**result, "executed": None}, sp, ref, executed_notebook=error_notebook())):
        page = Page(html)
        assert page.problems == []
        assert "error" in page.text and "cell 3 raised RuntimeError" in page.text
        pre = [t for t in page.texts if "Cell In[" in t[0]]
        assert len(pre) == 1
        tb = pre[0][0]
        assert "Cell In[3], line 2" in tb and "H = train_student(model)" in tb
        assert "Cell In[2], line 4, in train_student(model)" in tb and "return model(x)" in tb
        assert tb.rstrip().endswith("RuntimeError: mat1 and mat2 shapes cannot be multiplied (5x783 and 784x512)")
        assert "3 frames in library code hidden" in tb
        assert "site-packages" not in tb and "interactiveshell" not in tb and "Module._wrapped" not in tb
        assert "\x1b" not in html and "[0;31m" not in html
        assert page.qids() == [q.id for q in sp.questions]
        assert all("not answered" in page.text_of(q.id) for q in sp.questions)


def test_failing_cell_reads_path_and_reports_position(tmp_path):
    path = tmp_path / "nb.ipynb"
    nbformat.write(error_notebook(), str(path))
    found = failing_cell(path)
    assert found["cell"] == 3 and found["ename"] == "RuntimeError"
    assert failing_cell(tmp_path / "missing.ipynb") is None
    (tmp_path / "bad.ipynb").write_text("{not json", encoding="utf-8")
    assert failing_cell(tmp_path / "bad.ipynb") is None


def test_trim_frames_handles_flattened_python_and_syntax_tracebacks():
    flat = ("Traceback (most recent call last):\n"
            "  File \"/home/s/work/mymod.py\", line 3, in f\n    return 1/0\n"
            "  File \"/usr/lib/python3.11/json/decoder.py\", line 337, in decode\n    obj = x\n"
            "ZeroDivisionError: division by zero")
    text = trim_frames([flat], "ZeroDivisionError", "division by zero")
    assert "mymod.py" in text and "return 1/0" in text
    assert "decoder.py" not in text and "1 frame in library code hidden" in text
    assert text.endswith("ZeroDivisionError: division by zero")
    syntax = "\x1b[0;36m  Cell \x1b[0;32mIn[1], line 1\x1b[0m\n    x = (1,\n           ^\nSyntaxError: incomplete input\n"
    text = trim_frames([syntax], "SyntaxError", "incomplete input")
    assert text.splitlines()[0].strip() == "Cell In[1], line 1"
    assert "x = (1," in text and text.count("SyntaxError: incomplete input") == 1


def test_override_comment_and_review_shown(sp, ref):
    result = fake_result("ann", GOOD_ANSWERS, sp=sp, ref=ref)
    changed = apply_overrides(result, [Override("ann", "ex1.d", 1.5, f"Good idea, {HOSTILE}", 2)], sp)
    page = Page(render_feedback_html(changed, sp, ref))
    d = page.text_of("ex1.d")
    assert "Points set by your instructor: 1.5" in d and f"Good idea, {HOSTILE}" in d
    assert "manual review" not in d
    assert "manual review" in page.text_of("ex1.b")
    assert "1.5 / 2" in d and "partly right" in d


def test_missing_answer_under_hide_has_no_figure_and_no_crash(sp, ref):
    result = fake_result("fay", {**WRONG_ANSWERS, "ex1.a": "", "ex1.c": "many"}, sp=sp, ref=ref)
    page = Page(render_feedback_html(result, sp, ref, hide_answers=True))
    assert [q for _, q in page.images].count("ex1.a") == 0
    assert [q for _, q in page.images].count("ex1.c") == 0
    assert "not answered" in page.text_of("ex1.a")
    assert "could not be read as a number" in page.text_of("ex1.c")


def test_accepts_a_loaded_reference_object(sp, ref, wrong, wrong_pages):
    from pathlib import Path

    from grader.assessment.reference_io import Reference

    loaded = Reference(Path("ref.json"), "0" * 64, ref, False)
    assert render_feedback_html(wrong, sp, loaded) == wrong_pages[False]


@pytest.mark.parametrize("hide", [False, True])
def test_renders_the_real_scorers_results(sp, ref, hide):
    from pathlib import Path

    from grader.assessment.reference_io import Reference
    from grader.assessment.score import score_answers
    from grader.assessment.validate import parse_answers

    loaded = Reference(Path("ref.json"), "0" * 64, ref, False)
    files = {"7b_ex1.json": parse_answers("7b_ex1.json", {"a": "0.15", "b": "yes it overfits", "c": "1024", "d": HOSTILE}),
             "7b_ex2.json": parse_answers("7b_ex2.json", {"a": "0.003", "b": "1024", "c": "no", "d": ""})}
    scored = score_answers(sp, loaded, files, hide=hide)
    result = {"student": "gil", "status": "graded", "reason": "", "content_sha256": "0" * 64, "executed": None,
              "duration_s": 1.0, **scored}
    html = render_feedback_html(result, sp, loaded, hide_answers=hide)
    page = Page(html)
    assert page.problems == [] and HOSTILE not in html
    assert page.qids() == [q.id for q in sp.questions]
    assert page.text_of("ex1.a").count("0.15 is not on the grid") == 1
    assert "partly right" in page.text_of("ex1.a")
    for qid in _optimum_ids(sp):
        qref = ref["questions"][qid]
        secrets = [_value_pattern(v) for v in {qref["best"], *qref["tie_set"]}]
        assert any(p.search(page.text_of(qid)) for p in secrets) != hide, qid


def test_invalid_answers_list_each_problem_escaped(sp, ref):
    result = fake_result("hal", {}, sp=sp, ref=ref, status="invalid-answers", reason="7b_ex1.json is invalid")
    result["errors"] = ['7b_ex1.json: a: "0.1x" is not a number', f"7b_ex2.json: {HOSTILE}: unexpected key"]
    html = render_feedback_html(result, sp, ref)
    page = Page(html)
    assert page.problems == [] and HOSTILE not in html
    assert '7b_ex1.json: a: "0.1x" is not a number' in page.text
    assert f"7b_ex2.json: {HOSTILE}: unexpected key" in page.text
    assert "invalid-answers" in page.text and "7b_ex1.json is invalid" in page.text


def test_a_batch_size_is_an_integer_in_captions_plots_and_expected_values(sp, ref, monkeypatch):
    """256, never 256.0: the figure's legend and ticks, its caption and alt text, the expected values,
    also when the artifact stores the grid as floats."""
    import copy

    import grader.reports.feedback_html as fh
    from grader.assessment.score import expected_value, score_question
    from grader.assessment.validate import parse_answers

    floats = copy.deepcopy(ref)
    qref = floats["questions"]["ex1.c"]
    qref.update(grid=[float(v) for v in qref["grid"]], best=float(qref["best"]), tie_set=[float(v) for v in qref["tie_set"]])
    for row in qref["table"]:
        row["value"] = float(row["value"])
    figures = []
    monkeypatch.setattr(fh, "png_data_uri", lambda fig: figures.append(fig) or "data:image/png;base64,")
    fh._figure_cached.cache_clear()
    result = fake_result("ann", {**GOOD_ANSWERS, "ex1.c": "64"}, sp=sp, ref=floats)
    result["questions"]["ex1.c"] = score_question(sp.question("ex1.c"), parse_answers("7b_ex1.json", {"c": "64"})["c"],
                                                  qref, spec=sp, provenance=floats.get("provenance") or {})
    page = Page(render_feedback_html(result, sp, floats, hide_answers=False))
    fh._figure_cached.cache_clear()
    plot = optimum_plot(sp.question("ex1.c"), result["questions"]["ex1.c"], sp, floats, hide_answers=False)
    assert sorted(plot["curves"]) == [32, 64] and plot["choice"] == 64 and plot["best"] == 32
    assert all(type(v) is int for v in [*plot["curves"], plot["choice"], plot["best"], *plot["tie_set"]])
    expected = expected_value(sp.question("ex1.c"), qref)
    assert expected == [32, 64] and all(type(v) is int for v in expected)
    text = page.text_of("ex1.c")
    assert "batch size S = 64, batch size S = 32" in text and not re.search(r"\b\d+\.0\b", text)
    alts = [a.get("alt", "") for tag, a in page.starts if tag == "img"]
    assert "learning curves: batch size S = 64, batch size S = 32" in alts
    assert not any(re.search(r"\b\d+\.0\b", alt) for alt in alts)
    (fig,) = [f for f in figures if any("your choice, 64" == t.get_text() for ax in f.axes if ax.get_legend()
                                        for t in ax.get_legend().get_texts())]
    curves, table = fig.axes
    assert [t.get_text() for t in curves.get_legend().get_texts()] == ["your choice, 64", "best, 32"]
    assert [t.get_text() for t in table.get_xticklabels()] == ["16", "32", "64", "128", "256", "512", "1024"]

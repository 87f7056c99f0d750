"""The reports' evidence parts (issue 13): the feedback's "Your own runs" section (HTML and Markdown)
and the class report's grid coverage, from results shaped like the evidence contract
(tests/evidence_fixtures.py); results without a runs record render as before."""

from __future__ import annotations

import copy
import json

import pytest

from evidence_fixtures import REPORTED_NOTE, evidence_results
from fakes import GOOD_ANSWERS, Page, decode_png, fake_result
from grader.reports.feedback_html import render_feedback_html
from grader.reports.ownruns import evidence_section, sweep_runs
from grader.reports.refcurves import seed_band
from grader.reports.report import feedback_markdown
from grader.reports.summary import class_summary, render_summary_html


@pytest.fixture(scope="module")
def students(sp, ref):
    return {r["student"]: r for r in evidence_results(sp, ref)}


@pytest.fixture(scope="module")
def ava_pages(sp, ref, students):
    return {hide: render_feedback_html(students["ava"], sp, ref, hide_answers=hide) for hide in (False, True)}


def _section(html: str) -> Page:
    """The "Your own runs" section alone, parsed."""
    start = html.index('<section class="box evidence" id="own-runs">')
    return Page(html[start:html.index("</section>", start) + len("</section>")])


def _sweep(section: dict, name: str) -> dict:
    return next(s for s in section["sweeps"] if s["name"] == name)


def _ref_texts(ref, sweep: str, metric: str) -> list[str]:
    return [f"{r['mean']:.4f} ± {r['se']:.4f}" for r in ref["tables"][sweep][metric] if not r["n_diverged"]]


# results without a runs record ------------------------------------------------------------------

@pytest.mark.parametrize("runs", ["absent", None])
def test_a_result_without_runs_renders_as_before(sp, ref, runs):
    plain = fake_result("ann", GOOD_ANSWERS, sp=sp, ref=ref)
    other = copy.deepcopy(plain)
    if runs is None:
        other["runs"] = None
        other["runs_summary"] = None
        for entry in other["questions"].values():
            entry["evidence"] = None
    for hide in (False, True):
        assert render_feedback_html(other, sp, ref, hide_answers=hide) == render_feedback_html(plain, sp, ref,
                                                                                             hide_answers=hide)
        assert feedback_markdown(other, sp, hide, ref) == feedback_markdown(plain, sp, hide)
    html = render_feedback_html(other, sp, ref)
    assert "Your own runs" not in html and "own-runs" not in html
    summary = class_summary([plain, other], sp, ref)
    assert summary["evidence"] is None
    assert 'id="coverage"' not in render_summary_html(summary)


# the feedback's table ----------------------------------------------------------------------------

def test_table_rows_show_own_metric_reference_and_the_answer(sp, ref, students):
    section = evidence_section(students["ava"], sp, ref, hidden=False)
    assert [s["name"] for s in section["sweeps"]] == ["lr", "batch"]
    lr = _sweep(section, "lr")
    assert lr["tried"] == "9 of 9"
    assert [c["qids"] for c in lr["columns"]] == ["ex1.a", "ex1.b, ex2.a, ex2.c"]
    rows = {r["value"]: r for r in lr["rows"]}
    assert list(rows) == ["0.001", "0.003", "0.01", "0.03", "0.1", "0.2", "0.3", "0.5", "1"]
    own = students["ava"]["questions"]["ex1.a"]["evidence"]["own_metric"]["0.5"]
    assert rows["0.5"]["cells"][0]["own"] == f"{own:.4f}"
    table = {r["value"]: r for r in ref["questions"]["ex1.a"]["table"]}
    assert rows["0.5"]["cells"][0]["ref"] == f"{table[0.5]['mean']:.4f} ± {table[0.5]['se']:.4f}"
    assert rows["1"]["cells"][0] == {"own": "diverged", "css": "diverged", "ref": "diverged"}
    assert {v: r["answer"] for v, r in rows.items() if r["answer"]} == {"0.2": "ex2.a", "0.5": "ex1.a"}
    batch = {r["value"]: r for r in _sweep(section, "batch")["rows"]}
    assert batch["16"]["cells"][0]["own"] == "not run" and batch["128"]["cells"][0]["own"] != "not run"
    assert batch["32"]["answer"] == "ex1.c" and batch["256"]["answer"] == "ex2.b"


def test_a_question_without_a_table_reads_the_sweeps_table(sp, ref, students):
    """ex1.b and ex2.c (yes/no) have no table of their own: their metric's column reads the artifact's sweep table."""
    section = evidence_section(students["ava"], sp, ref, hidden=False)
    rows = {r["value"]: r for r in _sweep(section, "lr")["rows"]}
    row = next(r for r in ref["tables"]["lr"]["best_test_acc"] if r["value"] == 0.3)
    assert rows["0.3"]["cells"][1]["ref"] == f"{row['mean']:.4f} ± {row['se']:.4f}"


def test_hidden_answers_draw_no_reference_band_and_show_no_reference_numbers(sp, ref, students, ava_pages):
    shown = evidence_section(students["ava"], sp, ref, hidden=False)
    hidden = evidence_section(students["ava"], sp, ref, hidden=True)
    for name in ("lr", "batch"):
        assert all("ref" in c for r in _sweep(shown, name)["rows"] for c in r["cells"])
        assert not any("ref" in c for r in _sweep(hidden, name)["rows"] for c in r["cells"])
        assert all(p["band"] for p in _sweep(shown, name)["plot"]["panels"])
        assert all(p["band"] == [] and p["own"] for p in _sweep(hidden, name)["plot"]["panels"])
    secrets = _ref_texts(ref, "lr", "final_train_acc") + _ref_texts(ref, "batch", "best_test_acc")
    assert all(s in ava_pages[False] for s in secrets)
    assert not any(s in ava_pages[True] for s in secrets)
    assert "reference" not in _section(ava_pages[True]).text
    md = feedback_markdown(students["ava"], sp, True, ref)
    assert "## Your own runs" in md and not any(s in md for s in secrets) and "reference" not in md.split("## Your own runs")[1]


def test_the_band_spans_the_reference_seeds_per_epoch(sp, ref):
    band = seed_band(ref, sp, "lr", "acc", [0.1, 0.7])
    assert list(band) == [0.1], "a value the artifact never ran has no band"
    runs = [r["history"]["acc"] for r in ref["runs"] if r["config"] == {"lr": 0.1, "batch_size": 128, "momentum": 0.9}]
    assert len(runs) == 3
    low, high = band[0.1]
    assert low == [min(c[e] for c in runs) for e in range(10)] and high == [max(c[e] for c in runs) for e in range(10)]
    assert all(lo < hi for lo, hi in zip(low, high))


# the feedback's curves ---------------------------------------------------------------------------

def test_curves_are_the_students_service_runs_with_the_full_epoch_count(sp, ref, students):
    ava = students["ava"]
    plot = _sweep(evidence_section(ava, sp, ref, hidden=False), "lr")["plot"]
    train = next(p for p in plot["panels"] if p["key"] == "acc")
    assert [v for v, _ in train["own"]] == [0.001, 0.003, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5], "1.0 diverged: no curve"
    full = next(r for r in ava["runs"] if r["config"]["lr"] == 0.3 and r["epochs"] == 10)
    assert dict(train["own"])[0.3] == pytest.approx(full["history"]["acc"]), "the 3-epoch run of 0.3 is not the curve"
    assert [p["key"] for p in plot["panels"]] == ["acc", "test_acc"]
    assert plot["diverged"] == [1.0] and plot["answers"] == [[0.2, "ex2.a"], [0.5, "ex1.a"]]
    assert train["answers"] == [[0.5, "ex1.a"]], "ex2.a reads the test curve: its mark is in that panel"
    assert plot["panels"][1]["answers"] == [[0.2, "ex2.a"]]
    assert [v for v, _, _ in train["band"]] == [v for v, _ in train["own"]]


def test_sweep_runs_match_the_sweeps_fixed_values_model_and_epochs(sp, students):
    runs = students["ava"]["runs"]
    assert sorted(sweep_runs(runs, sp, "batch")) == [32, 64, 128, 256], "lr 0.1 at S=128 is also the batch sweep's 128"
    odd = [{**runs[0], "config": {**runs[0]["config"], "hidden": 256}},
           {**runs[0], "config": {**runs[0]["config"], "optimizer": "Adam"}},
           {**runs[0], "config": {**runs[0]["config"], "lr": "0.001"}},
           {**runs[0], "config": {**runs[0]["config"], "momentum": 0.5}},
           {**runs[0], "epochs": 9}, {**runs[0], "config": None}]
    assert sweep_runs(odd, sp, "lr") == {}
    assert sweep_runs([runs[0]], sp, "lr") == {0.001: runs[0]}


def test_each_sweep_figure_decodes(ava_pages):
    for html in ava_pages.values():
        section = _section(html)
        assert section.problems == [] and len(section.images) == 2
        for src, _ in section.images:
            pixels = decode_png(src)
            assert pixels.shape[0] > 200 and pixels.shape[1] > 400


def test_odd_runs_records_render_without_a_traceback(sp, ref, students):
    """Whatever shape a runs entry has (the notebook's kit is untrusted), the page renders and says what it can."""
    result = copy.deepcopy(students["ava"])
    result["runs"] += [None, "run", {"config": None, "epochs": "ten", "history": "lots"},
                       {"config": {"lr": [0.1], "batch_size": {"a": 1}}, "source": "notebook-reported", "served": None,
                        "calls": True, "history": {"acc": ["x", None, float("nan")]}}]
    result["runs_summary"]["note"] = 12
    result["questions"]["ex1.a"]["evidence"]["sweeps"] = "lr"
    section = _section(render_feedback_html(result, sp, ref))
    assert section.problems == [] and len(section.images) == 2
    assert "lr=[0.1], batch_size={'a': 1}" in section.text and "12" in section.text


# what the runs support ---------------------------------------------------------------------------

def _sentences(section: dict) -> dict[str, str]:
    return {qid: s["text"] for s in section["sentences"] for qid in s["qid"].split(", ")}


def test_the_sentences_say_what_the_runs_support(sp, ref, students):
    said = {name: _sentences(evidence_section(r, sp, ref, hidden=True)) for name, r in students.items()
            if r.get("runs") is not None}
    assert said["ava"]["ex1.a"] == "Your runs (all 9 learning rates) point to 0.5; your answer 0.5 agrees with them."
    assert said["ava"]["ex1.c"] == "Your runs (4 of 7 batch sizes) point to 32; your answer 32 agrees with them."
    assert said["ava"]["ex1.b"] == "Your runs (all 9 learning rates) say no; your answer agrees with them."
    assert said["ava"]["ex2.c"].endswith("do not decide this question: they leave out values of the grid.")
    assert said["ben"]["ex1.a"] == "Your runs (all 9 learning rates) point to 0.1; your answer 0.1 agrees with them."
    assert said["ben"]["ex2.a"].endswith("point to 0.2; your answer 0.003 does not agree with them.")
    assert said["cal"]["ex1.a"] == ("You answered 0.3, which your notebook never trained. "
                                    "Your runs (2 of 9 learning rates) point to 0.1.")
    assert set(said["dee"].values()) == {
        "No runs were recorded (trained in the notebook, not by the training service): not evidence."}
    assert said["fay"]["ex1.c"].startswith("Your notebook trained none of the 7 batch sizes with the full 10 epochs")
    assert "ex1.d" not in said["ava"], "a text question has no evidence"


def test_a_snapped_answer_is_named_with_what_was_written(sp, ref, students):
    result = copy.deepcopy(students["ava"])
    result["questions"]["ex1.a"]["answer"] = "0.45"
    assert _sentences(evidence_section(result, sp, ref, hidden=False))["ex1.a"] == (
        "Your runs (all 9 learning rates) point to 0.5; your answer 0.5 (your 0.45 on the grid) agrees with them.")


def test_notebook_reported_runs_are_shown_apart_with_the_note(sp, ref, students):
    html = render_feedback_html(students["dee"], sp, ref)
    section = _section(html)
    assert "Runs your notebook reported itself: shown, not evidence" in section.text
    assert section.text.count("optimizer=Adam") == 3 and REPORTED_NOTE in section.text
    assert section.images == [], "runs that are not evidence are never drawn as the student's curves"
    data = evidence_section(students["dee"], sp, ref, hidden=False)
    assert data["sweeps"] == [] and len(data["reported"]) == 3
    assert data["reported"][0] == {"config": "lr=0.001, batch_size=128, hidden=512, optimizer=Adam", "epochs": "10",
                                   "served": "notebook", "calls": "1",
                                   "note": "optimizer Adam is not the lab's SGD: trained in the notebook"}
    md = feedback_markdown(students["dee"], sp, False, ref)
    assert "### Runs your notebook reported itself: shown, not evidence" in md and REPORTED_NOTE in md


def test_the_markdown_feedback_has_the_tables(sp, ref, students):
    md = feedback_markdown(students["ava"], sp, False, ref)
    part = md.split("## Your own runs", 1)[1]
    assert "### The lr sweep: you trained 9 of 9 values of the learning rate η" in part
    row = next(line for line in part.splitlines() if line.startswith("| 0.5 |"))
    assert row.endswith("| ◀ ex1.a |") and row.count("|") == 7
    assert "- **ex1.a**: Your runs (all 9 learning rates) point to 0.5" in part


# the class report ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def summary(sp, ref, students):
    return class_summary(list(students.values()), sp, ref)


def test_coverage_counts_students_whose_service_ran_each_value(summary):
    ev = summary["evidence"]
    assert (ev["students"], ev["with_runs"], ev["epochs"]) == (6, 5, 10)
    assert list(ev["sweeps"]) == ["lr", "batch"], "the momentum sweep no question reads is left out"
    lr = {g["value"]: g["students"] for g in ev["sweeps"]["lr"]["grid"]}
    assert lr == {0.001: 2, 0.003: 2, 0.01: 3, 0.03: 2, 0.1: 3, 0.2: 2, 0.3: 2, 0.5: 2, 1.0: 2}
    batch = {g["value"]: g["students"] for g in ev["sweeps"]["batch"]["grid"]}
    assert batch == {16: 0, 32: 1, 64: 1, 128: 3, 256: 1, 512: 0, 1024: 0}


def test_notebook_reported_and_short_runs_do_not_count(sp, ref, students):
    dee = students["dee"]
    as_service = copy.deepcopy(dee)
    for r in as_service["runs"]:
        r["source"] = "service"
        r["config"]["optimizer"] = "SGD"
        r["config"]["momentum"] = 0.9
    counts = lambda rs: {g["value"]: g["students"] for g in class_summary(rs, sp, ref)["evidence"]["sweeps"]["lr"]["grid"]}
    assert sum(counts([dee]).values()) == 0
    assert counts([as_service])[0.001] == 1
    short = copy.deepcopy(as_service)
    for r in short["runs"]:
        r["epochs"] = 3
    assert sum(counts([short]).values()) == 0


def test_agreement_share_per_question(summary):
    q = summary["evidence"]["questions"]
    assert q["ex1.a"] == {"with_evidence": 5, "decided": 3, "agree": 2, "share": 0.667, "complete": 2}
    assert q["ex1.b"] == {"with_evidence": 5, "decided": 2, "agree": 2, "share": 1.0, "complete": 2}
    assert q["ex2.c"]["decided"] == 0 and q["ex2.c"]["share"] is None
    assert "ex1.d" not in q


def test_summary_json_and_html_show_the_same_evidence_numbers(summary):
    assert json.loads(json.dumps(summary)) == summary
    page = Page(render_summary_html(summary))
    assert page.problems == []
    cells = {k: v for k, v in page.cells().items() if k.startswith("evidence/")}
    assert len(cells) == 2 + 9 + 7 + 6 * 5
    for key, shown in cells.items():
        value = summary
        for part in key.split("/"):
            value = value[int(part)] if isinstance(value, list) else value[part]
        assert shown == "—" if value is None else float(shown) == value, key
    assert "5 of 6 students have a runs record" in page.text
    charts = [src for src, _ in Page(render_summary_html(summary)).images]
    assert len(charts) == 1 + 4 + 2, "histogram, one per numeric question, one coverage chart per sweep"
    for src in charts[-2:]:
        assert decode_png(src).shape[1] > 300


def test_students_with_the_same_runs_share_one_drawing_of_each_sweep_figure(sp, ref, students, monkeypatch):
    """The memo serves one history to every notebook asking for the same run, so in a class many "Your own runs"
    figures are alike: each distinct one is drawn once per process, and a different one is drawn anew."""
    from grader.reports import ownruns_plot

    drawn = []
    real = ownruns_plot._draw_sweep
    monkeypatch.setattr(ownruns_plot, "_draw_sweep", lambda plot: drawn.append(plot) or real(plot))
    ownruns_plot._sweep_cached.cache_clear()
    first = render_feedback_html(students["ava"], sp, ref)
    twin = copy.deepcopy(students["ava"])
    twin["student"] = "ava-twin"
    second = render_feedback_html(twin, sp, ref)
    assert len(drawn) == 2, "one figure per sweep, drawn for the first student only"
    assert _section(first).images == _section(second).images
    other = copy.deepcopy(students["ava"])
    other["runs"][0]["history"]["acc"][-1] -= 0.05
    third = render_feedback_html(other, sp, ref)
    assert len(drawn) == 3 and _section(third).images != _section(first).images
    ownruns_plot._sweep_cached.cache_clear()
    assert render_feedback_html(students["ava"], sp, ref) == first, "drawn afresh, the same page"

"""The static reports (feedback pages, summary.html) in a real browser: Playwright driving Debian's
chromium over file:// URLs, as a student or instructor opens them from a download.

Run alone with `pytest -m browser`. chromium comes from apt (scripts/bootstrap.sh installs it);
Playwright's own browser download is never used.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from grader.reports.report import write_class_report, write_feedback
from evidence_fixtures import REPORTED_NOTE, evidence_results
from report_hostile import (BIDI_SHOWN, COPIER, CONTROLS_SHOWN, HOSTILE, NAME_SHOWN, RUNS_NOTE_SHOWN, hostile_notebook,
                            hostile_results)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def out(sp, ref, tmp_path_factory) -> Path:
    """An OUT/ folder as `grade` writes it: a feedback page per hostile student (one with its failed
    notebook at hand) and the class report."""
    out = tmp_path_factory.mktemp("out")
    results = hostile_results(sp, ref)
    (out / "executed").mkdir()
    nbformat.write(hostile_notebook(), str(out / "executed" / "failed.ipynb"))
    results[2]["executed"] = "executed/failed.ipynb"
    for r in results:
        write_feedback(out, r, sp, False, ref)
    write_class_report(out, results, sp, ref)
    return out


def _visit(browser, path: Path):
    """Open a report from disk; -> (page, context, what happened): dialogs, page errors, requests."""
    context = browser.new_context()
    page = context.new_page()
    seen = {"dialogs": [], "errors": [], "requests": []}
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    context.on("request", lambda r: seen["requests"].append(r.url))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    for y in range(0, 2000, 200):
        page.mouse.move(300, y)
    page.mouse.click(300, 300)
    return page, context, seen


def _assert_nothing_ran(page, seen) -> None:
    assert page.evaluate("window.__pwned === undefined")
    assert page.evaluate("document.scripts.length") == 0
    assert page.locator("#jslink, #bold, iframe, svg, a").count() == 0
    assert seen["dialogs"] == [] and seen["errors"] == []
    foreign = [u for u in seen["requests"] if not u.startswith(("file://", "data:"))]
    assert foreign == []


def _assert_figures_load(page, at_least: int, within: str = "body") -> None:
    figures = page.evaluate("""(within) => Array.from(document.querySelector(within).querySelectorAll('img'), i =>
        ({src: i.src.slice(0, 22), complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}))""", within)
    assert len(figures) >= at_least
    for f in figures:
        assert f["src"] == "data:image/png;base64," and f["complete"] and f["width"] > 0 and f["height"] > 0, f


def test_feedback_pages_run_nothing_show_the_text_and_load_their_figures(browser, out, sp):
    pages = sorted((out / "feedback").glob("*.html"))
    assert len(pages) == 3
    shown = {}
    for path in pages:
        page, context, seen = _visit(browser, path)
        _assert_nothing_ran(page, seen)
        text = page.inner_text("body")
        shown[path.name] = text
        if NAME_SHOWN in text:
            assert HOSTILE[0] in text and HOSTILE[1] in text and HOSTILE[2] in text and HOSTILE[3] in text
            assert BIDI_SHOWN in text and CONTROLS_SHOWN in text
            assert "Instructor quoting you: " + HOSTILE[1] in text
            assert "second line <script>window.__pwned = 7</script>\n" in page.inner_text("#q-ex2\\.c .answer")
            _assert_figures_load(page, at_least=1)
            own = page.locator("#own-runs")
            assert own.is_visible()
            assert f"lr={HOSTILE[0]}" in own.inner_text() and RUNS_NOTE_SHOWN in own.inner_text()
            _assert_figures_load(page, at_least=1, within="#own-runs")
        if "not graded normally" in text:
            assert f"raised {HOSTILE[1]} {BIDI_SHOWN}" in text
            assert f"s = '{HOSTILE[0]}'" in page.inner_text("pre.traceback")
        context.close()
    assert sum(NAME_SHOWN in t for t in shown.values()) == 1
    assert sum(COPIER in t for t in shown.values()) == 1
    assert sum("not graded normally" in t for t in shown.values()) == 1


def test_summary_page_runs_nothing_shows_the_names_and_loads_its_figures(browser, out, sp):
    page, context, seen = _visit(browser, out / "summary.html")
    _assert_nothing_ran(page, seen)
    review = page.inner_text("#review")
    assert NAME_SHOWN in review and COPIER in review
    similar = page.inner_text("#similar")
    assert NAME_SHOWN in similar and COPIER in similar
    _assert_figures_load(page, at_least=1 + sum(q.kind == "optimum" for q in sp.questions))
    assert page.locator("#coverage").is_visible()
    _assert_figures_load(page, at_least=2, within="#coverage")
    context.close()


@pytest.fixture(scope="module")
def evidence_out(sp, ref, tmp_path_factory) -> Path:
    """OUT/ for one student per evidence case: feedback pages (answers shown) and the class report."""
    out = tmp_path_factory.mktemp("evidence-out")
    results = evidence_results(sp, ref)
    for r in results:
        write_feedback(out, r, sp, False, ref)
    write_class_report(out, results, sp, ref)
    return out


def test_the_evidence_section_is_visible_and_its_figures_decode(browser, evidence_out):
    page, context, seen = _visit(browser, evidence_out / "feedback" / "ava.html")
    _assert_nothing_ran(page, seen)
    own = page.locator("#own-runs")
    own.scroll_into_view_if_needed()
    assert own.is_visible() and own.bounding_box()["height"] > 800
    assert "ex1.a: Your runs (all 9 learning rates) point to 0.5; your answer 0.5 agrees with them." in own.inner_text()
    answer_rows = page.locator("#own-runs-lr tr.answer-row").all_inner_texts()
    assert [t.split("\t")[0] for t in answer_rows] == ["0.2", "0.5"] and "◀ ex1.a" in answer_rows[1]
    _assert_figures_load(page, at_least=2, within="#own-runs")
    context.close()
    page, context, seen = _visit(browser, evidence_out / "feedback" / "dee.html")
    reported = page.locator("#own-runs table.reported")
    assert reported.is_visible() and reported.inner_text().count("optimizer=Adam") == 3
    assert REPORTED_NOTE in page.inner_text("#own-runs")
    context.close()
    page, context, seen = _visit(browser, evidence_out / "feedback" / "eli.html")
    assert page.locator("#own-runs").count() == 0, "no runs record, no section"
    context.close()


def test_the_coverage_chart_is_visible_and_decodes(browser, evidence_out):
    page, context, seen = _visit(browser, evidence_out / "summary.html")
    _assert_nothing_ran(page, seen)
    coverage = page.locator("#coverage")
    coverage.scroll_into_view_if_needed()
    assert coverage.is_visible()
    assert "5 of 6 students have a runs record" in coverage.inner_text()
    _assert_figures_load(page, at_least=2, within="#coverage")
    share = page.locator('#coverage td[data-key="evidence/questions/ex1.a/share"]').inner_text()
    assert share == "0.667"
    context.close()

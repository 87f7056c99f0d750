"""The static reports with hostile text in every field a student controls: the raw HTML holds no tag,
attribute or URL the student wrote, template syntax stays literal, and each text is shown as written
(controls as visible stand-ins)."""

from __future__ import annotations

import pytest

from fakes import Page
from grader.reports.feedback_html import render_feedback_html
from grader.reports.report import feedback_markdown
from grader.reports.summary import class_summary, render_summary_html
from report_hostile import (BIDI_SHOWN, COPIER, CONTROLS, CONTROLS_SHOWN, HOSTILE, JOINED, LONG, MULTILINE, NAME,
                            NAME_SHOWN, RUN_NOTE, RUNS_NOTE, RUNS_NOTE_SHOWN, hostile_notebook, hostile_results)

# every element the report templates write; a student's text must never add another
REPORT_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "strong", "bdi", "section",
               "span", "div", "figure", "img", "figcaption", "ul", "li", "code", "pre", "table", "tr", "th", "td"}
FOREIGN = ("<script", "<img src=x", "<svg", "<iframe", "<a ", "<b id", "\u202e", "\u2067", "\x00", "\x07")


def _flat(text: str) -> str:
    return " ".join(text.split())


def assert_inert(html: str) -> Page:
    """Nothing the student wrote became markup: only the templates' tags, no handler, link or foreign image."""
    page = Page(html)
    assert page.problems == []
    assert {tag for tag, _ in page.starts} <= REPORT_TAGS, {tag for tag, _ in page.starts} - REPORT_TAGS
    for tag, attrs in page.starts:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        assert "href" not in attrs and attrs.get("id") not in ("jslink", "bold"), (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,"), attrs["src"][:40]
    lowered = html.lower()
    assert not [f for f in FOREIGN if f in lowered]
    assert "{{ 7*7 }}" in page.text, "template syntax in student text is shown, not evaluated"
    return page


@pytest.fixture(scope="module")
def results(sp, ref):
    return hostile_results(sp, ref)


@pytest.mark.parametrize("hide", [False, True])
def test_feedback_page_shows_hostile_answers_name_and_comment_as_text(sp, ref, results, hide):
    graded = results[0]
    html = render_feedback_html(graded, sp, ref, hide_answers=hide)
    page = assert_inert(html)
    assert NAME_SHOWN in page.text
    title = html.split("<title>", 1)[1].split("</title>", 1)[0]
    assert "<img" not in title and "&lt;img src=x" in title and "[U+202E]" in title
    assert _flat("yes " + JOINED) in page.text_of("ex1.b")
    assert _flat(f"{LONG} {BIDI_SHOWN}") in page.text_of("ex1.d")
    assert HOSTILE[1] in page.text_of("ex1.a")
    assert HOSTILE[2] in page.text_of("ex1.c"), "template syntax in an answer is shown, not evaluated"
    assert HOSTILE[3] in page.text_of("ex2.a")
    assert CONTROLS not in html and CONTROLS_SHOWN in page.text_of("ex2.b")
    assert _flat("no " + MULTILINE) in page.text_of("ex2.c")
    assert "first line\nsecond line &lt;script&gt;" in html, "the answer keeps its line breaks (pre-wrap)"
    assert "Instructor quoting you: " + HOSTILE[1] in page.text_of("ex1.d")
    assert ("You wrote: yes " + _flat(JOINED) in page.text_of("ex1.b")) != hide


def test_failed_notebook_reason_errors_and_traceback_are_text(sp, ref, results):
    failed = results[2]
    html = render_feedback_html(failed, sp, ref, executed_notebook=hostile_notebook())
    page = assert_inert(html)
    assert HOSTILE[0] in page.text
    assert _flat(f"raised {HOSTILE[1]} {BIDI_SHOWN}") in page.text
    for h in HOSTILE:
        assert f"7b_ex1.json: {h}: unexpected key" in page.text
    assert CONTROLS_SHOWN in page.text
    (trace,) = [t for t, _ in page.texts if "raise Boom(s)" in t]
    assert f"s = '{HOSTILE[0]}'" in trace and "<img src=x onerror=alert('ename')>" in trace
    assert "<img src=x onerror=alert('ename')>" in page.text, "the exception's name, as the student set it"
    assert _flat(f"{HOSTILE[0]} {HOSTILE[2]} {BIDI_SHOWN}") in _flat(trace)


def test_summary_names_hostile_students_as_text(sp, ref, results):
    summary = class_summary(results, sp, ref)
    assert {(p["student_a"], p["student_b"]) for p in summary["similar"]} == {(NAME, COPIER)}
    assert NAME in [r["student"] for r in summary["review"]]
    page = assert_inert(render_summary_html(summary))
    assert page.text.count(NAME_SHOWN) >= 1 + len(summary["similar"])
    assert page.text.count(COPIER) >= 1 + len(summary["similar"])


def test_summary_title_is_text(sp, ref, results):
    html = render_summary_html(class_summary(results, sp, ref), title=HOSTILE[0] + HOSTILE[2])
    page = assert_inert(html)
    assert HOSTILE[0] + HOSTILE[2] in page.text


def _own_runs_text(html: str) -> str:
    start = html.index('<section class="box evidence" id="own-runs">')
    return _flat(Page(html[start:html.index("</section>", start) + len("</section>")]).text)


@pytest.mark.parametrize("hide", [False, True])
def test_the_notebooks_own_runs_and_the_runs_note_are_text(sp, ref, results, hide):
    """A hostile runs file: config values (a string lr), how it ran, its epochs and reason, the summary's note."""
    html = render_feedback_html(results[0], sp, ref, hide_answers=hide)
    assert_inert(html)
    shown = _own_runs_text(html)
    assert "Runs your notebook reported itself: shown, not evidence" in shown
    assert f"lr={HOSTILE[0]}" in shown and f"optimizer={HOSTILE[1]}" in shown and "batch_size={{ 7*7 }}" in shown
    assert HOSTILE[2] in shown, "epochs as the notebook wrote them"
    assert HOSTILE[5][:59] + "…" in shown, "'served' as the notebook wrote it, cut at 60 characters"
    assert _flat(f"{HOSTILE[6]} {CONTROLS_SHOWN}") in shown
    assert _flat(RUNS_NOTE_SHOWN) in shown
    assert RUN_NOTE not in html and RUNS_NOTE not in html


def test_the_markdown_feedback_keeps_the_runs_file_plain(sp, ref, results):
    md = feedback_markdown(results[0], sp, False, ref)
    part = md.split("## Your own runs", 1)[1]
    assert "Runs your notebook reported itself" in part
    for raw in ("<script", "<img", "<b id", "<iframe", "</section>"):
        assert raw not in md, raw
    assert "\x00" not in part and "\u202e" not in part and CONTROLS_SHOWN in part
    assert "right-to-left \\[U+202E\\]override" in part, "the runs note's bidi controls are named, not obeyed"
    row = next(line for line in part.splitlines() if "onerror" in line)
    assert row.count(" | ") == 4, "a pipe in the notebook's text cannot add a column"
    assert "&lt;script&gt;" in row and "{{ 7\\*7 }}" in row

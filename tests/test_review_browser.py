"""`labgrader review` in a real browser: Playwright driving Debian's chromium against the real server process.

Run alone with `pytest -m browser`. chromium comes from apt (scripts/bootstrap.sh installs it);
Playwright's own browser download is never used.
"""

from __future__ import annotations

import csv
import io
import json
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from review_fixtures import HOSTILE_NAME, NOTEBOOK, answers, small_class

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]


class Server:
    """`labgrader review OUT --no-browser` as a child process; its URL read from its first stdout line."""

    def __init__(self, out: Path):
        self.out = out
        self.proc = subprocess.Popen([sys.executable, "-m", "grader", "review", str(out), "--no-browser"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)
        assert ready, "the review server printed no URL within 120 s"
        self.url = self.proc.stdout.readline().decode().strip()
        assert self.url.startswith("http://127.0.0.1:") and "?token=" in self.url, self.url
        parts = urlsplit(self.url)
        self.base = f"{parts.scheme}://{parts.netloc}"

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)


@pytest.fixture
def serve():
    servers = []

    def start(out: Path) -> Server:
        servers.append(Server(out))
        return servers[-1]
    yield start
    for s in servers:
        s.stop(signal.SIGKILL)


def _open(browser, server: Server):
    context = browser.new_context()
    page = context.new_page()
    page.goto(server.url)
    return context, page


def _group(page, key: str):
    return page.locator(f"section#g-{quote(key, safe='')}")


def test_decide_a_group_by_keys_split_a_member_reload_and_find_both(browser, serve, tmp_path):
    server = serve(small_class(tmp_path / "out", hostile=False))
    context, page = _open(browser, server)
    page.goto(server.base + "/q/ex1.d")
    first = _group(page, "ann")
    assert "4 answers" in first.inner_text()
    first.focus()
    page.keyboard.press("1")
    page.keyboard.press("2")
    assert first.locator("input[name=items]").nth(0).is_checked() and first.locator("input[name=items]").nth(1).is_checked()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "decided: 2 point(s) (steps, noise)" in _group(page, "ann").inner_text()
    with page.expect_navigation():
        _group(page, "ann").locator("li", has_text="dan").locator("button", has_text="split out").click()
    alone = _group(page, "dan")
    alone.locator("input[name=points]").fill("0.5")
    alone.locator("input[name=comment]").fill("typos")
    with page.expect_navigation():
        alone.locator("button[type=submit]", has_text="Save").click()
    page.reload()
    assert "decided: 2 point(s)" in _group(page, "ann").inner_text()
    assert "3 answers" in _group(page, "ann").inner_text()
    assert "decided: 0.5 point(s)" in _group(page, "dan").inner_text() and "typos" in _group(page, "dan").inner_text()
    page.keyboard.press("j")
    assert page.evaluate("document.activeElement.id") != "g-ann"
    context.close()


def test_a_confirmed_decision_survives_sigkill(browser, serve, tmp_path):
    out = small_class(tmp_path / "out", hostile=False)
    server = serve(out)
    context, page = _open(browser, server)
    page.goto(server.base + "/q/ex1.d")
    group = _group(page, "ann")
    group.locator("input[name=points]").fill("1.5")
    group.locator("input[name=comment]").fill("confirmed before the kill")
    with page.expect_navigation() as nav:
        group.locator("button[type=submit]", has_text="Save").click()
    assert nav.value.ok
    server.stop(signal.SIGKILL)
    context.close()
    again = serve(out)
    context, page = _open(browser, again)
    page.goto(again.base + "/q/ex1.d")
    text = _group(page, "ann").inner_text()
    assert "decided: 1.5 point(s)" in text and "confirmed before the kill" in text
    context.close()


HOSTILE = [
    "<script>window.__pwned = 1; alert('script')</script>",
    "<img src=x onerror=\"window.__pwned = 2; alert('img')\">",
    "<a href=\"javascript:alert('link')\" id=\"jslink\">click me</a>",
    "<svg onload=alert('svg')></svg><iframe src=\"https://example.com/\"></iframe>",
    "<link rel=stylesheet href=\"https://example.com/x.css\"><img src=\"https://example.com/beacon.png\">",
    "right-to-left \u202eoverride\u202c and isolate \u2067text\u2069 <b onmouseover=alert(1)>hover</b>",
    "NUL byte here:\x00 and a bell \x07 too",
    "A" * 65000 + "<script>alert('tail')</script>",
]


def test_hostile_answers_show_no_dialog_run_no_script_send_no_request(browser, serve, tmp_path):
    cls = {f"s{i}": answers(text, b="yes " + text, c="no " + text) for i, text in enumerate(HOSTILE)}
    cls[HOSTILE_NAME] = answers(HOSTILE[0])
    cls['"><svg onload=alert(9)>'] = answers(HOSTILE[1])
    from grader.review.fabricate import graded_out

    hostile_nb = NOTEBOOK.replace("parent.alert('nb')", "alert('nb'); fetch('https://example.com/nb')")
    out = graded_out(tmp_path / "out", cls, executed={HOSTILE_NAME: hostile_nb, "s0": hostile_nb})
    server = serve(out)
    context, page = _open(browser, server)
    dialogs, requests, errors = [], [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    context.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    paths = ["/", "/q/ex1.b", "/q/ex1.d", "/q/ex2.c", "/q/ex2.d"] + ["/s/" + quote(s, safe="") for s in cls]
    for path in paths:
        response = page.goto(server.base + path)
        assert response.status == 200, path
        page.wait_for_load_state("load")
        page.mouse.move(200, 300)
        assert page.evaluate("window.__pwned === undefined"), path
    page.goto(server.base + "/q/ex1.d")
    assert page.locator("#jslink").count() == 0
    assert "\u202e" not in page.content() and "[U+202E]" in page.inner_text("main")
    assert "\u2400" in page.inner_text("main"), "the NUL byte is shown as its picture"
    page.goto(server.base + "/s/" + quote(HOSTILE_NAME, safe=""))
    frame = page.frame_locator("iframe.notebook")
    assert frame.locator("b", has_text="hi").count() == 1
    time.sleep(1)
    assert dialogs == []
    foreign = [u for u in requests if not u.startswith(server.base)]
    assert foreign == [], foreign
    allowed = ("/", "/q/", "/s/", "/static/review.css", "/static/review.js")
    assert all(urlsplit(u).path.startswith(allowed) for u in requests)
    context.close()


def test_no_token_gives_403_and_a_post_without_csrf_is_refused(browser, serve, tmp_path):
    server = serve(small_class(tmp_path / "out", hostile=False))
    stranger = browser.new_context()
    response = stranger.new_page().goto(server.base + "/")
    assert response.status == 403 and "token" in response.text()
    stranger.close()
    context, page = _open(browser, server)
    page.goto(server.base + "/q/ex1.d")
    status = page.evaluate("""async () => {
        const body = new URLSearchParams({group: 'ann', version: 'x', points: '1'});
        const r = await fetch('/q/ex1.d/decide', {method: 'POST', body});
        return r.status; }""")
    assert status == 403
    group = _group(page, "ann")
    group.locator("form.decide input[name=_csrf]").evaluate("e => e.remove()")
    group.locator("input[name=points]").fill("1")
    with page.expect_navigation() as nav:
        group.locator("button[type=submit]", has_text="Save").click()
    assert nav.value.status == 403
    assert not (server.out / "review" / "decisions.jsonl").exists()
    context.close()


def test_a_second_tabs_stale_save_is_refused_with_the_current_value(browser, serve, tmp_path):
    server = serve(small_class(tmp_path / "out", hostile=False))
    context, one = _open(browser, server)
    two = context.new_page()
    for page in (one, two):
        page.goto(server.base + "/q/ex1.d")
    _group(one, "ann").locator("input[name=points]").fill("2")
    _group(one, "ann").locator("input[name=comment]").fill("from tab one")
    with one.expect_navigation():
        _group(one, "ann").locator("button[type=submit]", has_text="Save").click()
    _group(two, "ann").locator("input[name=points]").fill("0")
    _group(two, "ann").locator("input[name=comment]").fill("from tab two")
    with two.expect_navigation() as nav:
        _group(two, "ann").locator("button[type=submit]", has_text="Save").click()
    assert nav.value.status == 409
    text = two.inner_text("main")
    assert "Not saved" in text and "2 point(s)" in text and "from tab one" in text
    lines = (server.out / "review" / "decisions.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["comment"] == "from tab one"
    context.close()


def test_decide_everything_publish_and_export_without_executing(browser, serve, tmp_path):
    out = small_class(tmp_path / "out", hostile=False)
    state_before = {p.name: p.read_bytes() for p in (out / ".state").iterdir()}
    executed_before = {p.name: p.stat().st_mtime_ns for p in (out / "executed").iterdir()}
    server = serve(out)
    context, page = _open(browser, server)
    decisions = 0
    for qid in ("ex1.b", "ex1.d", "ex2.c", "ex2.d"):
        page.goto(server.base + f"/q/{qid}")
        while page.locator("section.group:not(.decided)").count():
            group = page.locator("section.group:not(.decided)").first
            top = group.locator("input[name=points]").get_attribute("max")
            group.locator("input[name=points]").fill(top)
            group.locator("input[name=comment]").fill(f"reviewed {qid}")
            with page.expect_navigation():
                group.locator("button[type=submit]", has_text="Save").click()
            decisions += 1
    page.goto(server.base + "/")
    with page.expect_navigation(timeout=300_000):
        page.locator("form.publish button").click(timeout=300_000)
    assert "nothing was executed" in page.inner_text("main")
    context.close()
    rows = {r["student"]: r for r in csv.DictReader(io.StringIO((out / "grades.csv").read_text()))}
    assert rows["eve"]["ex1.d"] == "2" and rows["eve"]["review"] == "no"
    assert all(r["review"] == "no" for r in rows.values())
    eve = json.loads((out / "results.json").read_text())
    assert {s["student"]: s["total"] for s in eve["students"]}["eve"] == float(rows["eve"]["total"])
    assert "Instructor: 2 points, reviewed ex1.d" in (out / "feedback" / "eve.md").read_text()
    done = subprocess.run([sys.executable, "-m", "grader", "export", str(out), "--to", "canvas",
                           "--dest", str(tmp_path / "canvas.csv")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    canvas = (tmp_path / "canvas.csv").read_text()
    assert "eve" in canvas and rows["eve"]["total"] in canvas
    assert {p.name: p.read_bytes() for p in (out / ".state").iterdir()} == state_before
    assert {p.name: p.stat().st_mtime_ns for p in (out / "executed").iterdir()} == executed_before
    assert decisions == sum(1 for line in (out / "review" / "decisions.jsonl").read_text().splitlines())

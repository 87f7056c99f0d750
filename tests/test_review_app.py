"""`labgrader review` through Starlette's test client: every route, the guard, hostile text, the CLI's bad input."""

from markupsafe import escape
import json
import re
import socket
import threading
import warnings
from urllib.parse import quote

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*", category=DeprecationWarning)
from starlette.testclient import TestClient  # noqa: E402

from grader.cli import main  # noqa: E402
from grader.review.app import make_app  # noqa: E402
from grader.review.security import CSP, Guard  # noqa: E402
from grader.review.state import load_state  # noqa: E402
from review_fixtures import HOSTILE_NAME, login, small_class, versions  # noqa: E402


@pytest.fixture
def served(tmp_path):
    out = small_class(tmp_path / "out")
    guard = Guard()
    guard.hosts.add("testserver")
    state = load_state(out)
    client = TestClient(make_app(state, guard), follow_redirects=False)
    return out, state, guard, client


@pytest.fixture
def client(served):
    out, state, guard, client = served
    return login(client, guard)


def _decide(client, guard, qid, group, version, **form):
    return client.post(f"/q/{qid}/decide", data={"_csrf": guard.csrf, "group": quote(group, safe=""), "version": version, **form})


def test_no_token_no_page(served):
    out, state, guard, client = served
    for path in ("/", "/q/ex1.d", "/s/ann", "/s/ann/notebook", "/api/questions", "/api/q/ex1.d", "/api/s/ann",
                 "/static/review.js"):
        assert client.get(path).status_code == 403, path
    assert client.get("/?token=wrong").status_code == 403
    assert client.post("/publish", data={"_csrf": guard.csrf}).status_code == 403
    assert client.get("/api/questions", headers={"Authorization": f"token {guard.token}"}).status_code == 200


def test_the_token_becomes_a_cookie_and_the_url_loses_it(served):
    out, state, guard, client = served
    r = client.get(f"/q/ex1.d?token={guard.token}&x=1")
    assert r.status_code == 303 and r.headers["location"] == "/q/ex1.d?x=1"
    assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=strict" in r.headers["set-cookie"]
    assert client.get("/q/ex1.d").status_code == 200


def test_host_header_must_name_this_server(client):
    assert client.get("/", headers={"host": "evil.example:80"}).status_code == 403
    assert client.get("/").status_code == 200


def test_every_page_has_the_strict_csp(client):
    for path in ("/", "/q/ex1.d", "/s/ann", "/api/questions", "/static/review.css", "/nope"):
        r = client.get(path)
        assert r.headers["content-security-policy"] == CSP, path
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    framed = client.get("/s/ann/notebook")
    assert framed.status_code == 200 and framed.headers["content-security-policy"].startswith("sandbox;")
    assert "script-src" not in framed.headers["content-security-policy"]


def test_overview_counts_and_links(client):
    r = client.get("/")
    assert r.status_code == 200
    assert 'href="/q/ex1.d"' in r.text and 'href="/s/ann"' in r.text
    assert re.search(r"ex1\.d</a>.*?<td class=\"num\">7</td>", r.text, re.S)


def test_queue_decide_split_and_reload(served, client):
    out, state, guard, _ = served
    page = client.get("/q/ex1.d").text
    v = versions(page)
    assert list(v)[0] == "ann" and "4 answers" in page
    r = _decide(client, guard, "ex1.d", "ann", v["ann"], items=["steps", "noise"], comment="both ideas")
    assert r.status_code == 303 and r.headers["location"] == "/q/ex1.d#g-ann"
    v = versions(client.get("/q/ex1.d").text)
    r = client.post("/q/ex1.d/split", data={"_csrf": guard.csrf, "student": "dan", "version": v["ann"]})
    assert r.status_code == 303
    v = versions(client.get("/q/ex1.d").text)
    assert _decide(client, guard, "ex1.d", "dan", v["dan"], points="0.5", comment="typos").status_code == 303
    page = client.get("/q/ex1.d").text
    assert "decided: 2 point(s) (steps, noise)" in page and "decided: 0.5 point(s)" in page
    entries = [json.loads(x) for x in (out / "review" / "decisions.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in entries] == ["decide", "split", "decide"]
    assert client.get("/api/s/dan").json()["questions"]["ex1.d"]["points"] == 0.5


def test_stale_save_is_refused_with_the_current_value(served, client):
    out, state, guard, _ = served
    old = versions(client.get("/q/ex1.d").text)["ann"]
    assert _decide(client, guard, "ex1.d", "ann", old, points="1", comment="first tab").status_code == 303
    r = _decide(client, guard, "ex1.d", "ann", old, points="0", comment="second tab")
    assert r.status_code == 409 and "Not saved" in r.text and "first tab" in r.text and "1 point(s)" in r.text
    assert len((out / "review" / "decisions.jsonl").read_text().splitlines()) == 1


def test_bad_form_is_400_with_a_reason(served, client):
    out, state, guard, _ = served
    v = versions(client.get("/q/ex1.d").text)["ann"]
    r = _decide(client, guard, "ex1.d", "ann", v, points="lots")
    assert r.status_code == 400 and "is not a number" in r.text
    assert client.get("/q/ex9.z").status_code == 404 and client.get("/q/ex1.a").status_code == 404


def test_state_changes_need_the_csrf_token(served, client):
    out, state, guard, _ = served
    v = versions(client.get("/q/ex1.d").text)["ann"]
    for path, form in [("/q/ex1.d/decide", {"group": "ann", "version": v, "points": "1"}),
                       ("/q/ex1.d/split", {"student": "dan", "version": v}), ("/publish", {})]:
        assert client.post(path, data=form).status_code == 403, path
        assert client.post(path, data={**form, "_csrf": "wrong"}).status_code == 403, path
    for path in ("/api/q/ex1.d/decide", "/api/q/ex1.d/split"):
        assert client.post(path, json={"group": "ann", "version": v, "points": 1}).status_code == 403
    r = client.post("/q/ex1.d/decide", data={"_csrf": guard.csrf, "group": "ann", "version": v, "points": "1"},
                    headers={"origin": "http://evil.example"})
    assert r.status_code == 403
    assert not (out / "review" / "decisions.jsonl").exists()


def test_json_api(served, client):
    out, state, guard, _ = served
    qs = client.get("/api/questions").json()
    assert [q["id"] for q in qs] == ["ex1.b", "ex1.d", "ex2.c", "ex2.d"] and qs[1]["flagged"] == 7
    groups = client.get("/api/q/ex1.d").json()["groups"]
    first = groups[0]
    h = {"x-csrf-token": guard.csrf}
    r = client.post("/api/q/ex1.d/decide", json={"group": first["group"], "version": first["version"], "items": ["steps"]}, headers=h)
    assert r.status_code == 200 and r.json()["decision"]["points"] == 1.0
    r = client.post("/api/q/ex1.d/decide", json={"group": first["group"], "version": first["version"], "points": 0}, headers=h)
    assert r.status_code == 409 and r.json()["current"]["decision"]["items"] == ["steps"]
    fresh = client.get("/api/q/ex1.d").json()["groups"][0]
    r = client.post("/api/q/ex1.d/split", json={"student": "dan", "version": fresh["version"]}, headers=h)
    assert r.status_code == 200
    assert client.post("/api/q/ex1.d/decide", content=b"[]", headers=h).status_code == 400
    assert client.get("/api/s/nobody").status_code == 404


def test_student_view_and_notebook_in_a_sandbox(client):
    r = client.get("/s/ann")
    assert r.status_code == 200 and "Feedback as the student sees it" in r.text
    assert '<iframe class="notebook" sandbox="" src="/s/ann/notebook"' in r.text
    nb = client.get("/s/ann/notebook")
    assert nb.status_code == 200 and "<b>hi</b>" in nb.text
    assert client.get("/s/bob/notebook").status_code == 404
    for bad in ("/s/..%2F..%2Fetc%2Fpasswd", "/s/nobody", "/s/%2E%2E"):
        assert client.get(bad).status_code == 404


def test_executed_paths_never_leave_out(served, client, tmp_path):
    out, state, guard, _ = served
    secret = tmp_path / "secret.ipynb"
    secret.write_text((out / "executed" / "ann.ipynb").read_text())
    state.base["bob"]["executed"] = "../secret.ipynb"
    state.current.pop("bob", None)
    assert client.get("/s/bob/notebook").status_code == 404


def test_hostile_text_and_names_are_inert(served, client):
    out, state, guard, _ = served
    for path in ("/", "/q/ex1.d", "/s/" + __import__("urllib.parse").parse.quote(HOSTILE_NAME, safe="")):
        r = client.get(path)
        assert r.status_code == 200, path
        assert "<img src=x" not in r.text and "<script>alert" not in r.text
        assert "\u202e" not in r.text
    page = client.get("/q/ex1.d").text
    assert str(escape("<script>alert('x')</script>")) in page and "[U+202E]" in page


def test_publish_form(served, client):
    out, state, guard, _ = served
    r = client.post("/publish", data={"_csrf": guard.csrf})
    assert r.status_code == 200 and "nothing was executed" in r.text
    assert json.loads((out / "results.json").read_text())["review"]["decisions"] == 0


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert main(["review", str(tmp_path), "--no-browser"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"labgrader: {tmp_path}: not a graded folder (no results.json; run `labgrader grade ... --out {tmp_path}` first)"]
    out = small_class(tmp_path / "out", hostile=False)
    (out / "review").mkdir()
    (out / "review" / "decisions.jsonl").write_text("garbage\n{}\n")
    assert main(["review", str(out), "--no-browser"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "decisions.jsonl:1: damaged decision line" in err[0]
    (out / "review" / "decisions.jsonl").unlink()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        assert main(["review", str(out), "--no-browser", "--port", str(busy.getsockname()[1])]) == 2
    finally:
        busy.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("labgrader: port ") and "is busy" in err[-1]


def test_loopback_is_the_default_and_another_host_is_warned(tmp_path, capsys, monkeypatch):
    from grader.review import command

    assert command.is_loopback("127.0.0.1") and command.is_loopback("localhost") and command.is_loopback("::1")
    assert not command.is_loopback("0.0.0.0") and not command.is_loopback("example.org")
    out = small_class(tmp_path / "out", hostile=False)
    served = []
    monkeypatch.setattr(command, "serve", lambda app, sock: served.append(sock.getsockname()) or sock.close())
    assert main(["review", str(out), "--no-browser", "--host", "0.0.0.0"]) == 0
    captured = capsys.readouterr()
    assert "warning: serving on 0.0.0.0, not loopback" in captured.err
    assert captured.out.startswith("http://0.0.0.0:") and "?token=" in captured.out
    assert main(["review", str(out), "--no-browser"]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err and captured.out.startswith("http://127.0.0.1:")
    assert served[1][0] == "127.0.0.1"


def test_an_untried_optimum_has_its_queue_and_takes_a_decision(tmp_path):
    from grader.review.fabricate import graded_out
    from review_fixtures import answers

    run = {"config": {"lr": 0.03, "batch_size": 128, "momentum": 0.9, "hidden": 512, "optimizer": "SGD"}, "epochs": 10,
           "source": "service", "served": "trained",
           "history": {"acc": [0.9] * 10, "test_acc": [0.8] * 10, "loss": [0.1] * 10, "test_loss": [0.2] * 10}}
    out = graded_out(tmp_path / "out", {"ann": answers("x")}, runs={"ann": [run]})
    guard = Guard()
    guard.hosts.add("testserver")
    client = login(TestClient(make_app(load_state(out), guard), follow_redirects=False), guard)
    assert 'href="/q/ex1.a"' in client.get("/").text
    page = client.get("/q/ex1.a")
    assert page.status_code == 200 and "2 point(s)" in page.text
    (version,) = versions(page.text).values()
    r = _decide(client, guard, "ex1.a", "ann", version, points="0.5", comment="")
    assert r.status_code == 303
    assert "ann,ex1.a,0.5" in (out / "overrides.csv").read_text()


def _record(failed: list, call, *args) -> None:
    try:
        call(*args)
    except BaseException as e:
        failed.append(e)


def _asgi(app, method: str, raw_path: bytes, *, headers=(), chunks=()):
    """Call the app as uvicorn does: an exact raw path (httpx would rewrite `//host/`), a body in chunks.
    Returns the status, the headers, the body and how many chunks the app read."""
    import asyncio
    from urllib.parse import unquote

    chunks, read, sent = iter(chunks), [0], []

    async def receive():
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        read[0] += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    path, _, query = raw_path.partition(b"?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": unquote(path.decode("ascii")), "raw_path": path, "query_string": query, "root_path": "",
             "headers": [(b"host", b"testserver"), *headers], "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
    # in a thread of its own: an earlier test in this process (Playwright's sync API) may leave an event loop
    # running in this one, and asyncio.run refuses to start inside it
    failed = []
    worker = threading.Thread(target=lambda: _record(failed, asyncio.run, app(scope, receive, send)))
    worker.start()
    worker.join()
    if failed:
        raise failed[0]
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body, read[0]


def _many():
    """A body of 400 chunks of 64 KiB (25 MiB), made as it is read."""
    import itertools

    return itertools.repeat(b"x" * 65536, 400)


def _api_headers(guard, **more):
    return [(b"cookie", f"{guard.cookie}={guard.token}".encode()), (b"x-csrf-token", guard.csrf.encode()),
            (b"content-type", b"application/json"), *((k.encode(), v.encode()) for k, v in more.items())]


def test_the_token_redirect_keeps_the_raw_path_and_never_leaves_the_site(served):
    """A name with %, # or ? links as /s/%25..%23..%3F..; the redirect that trades the token must keep those
    escapes, and `//host/` must not become a protocol-relative Location."""
    out, state, guard, client = served
    app, t = client.app, guard.token.encode()
    status, headers, _, _ = _asgi(app, "GET", b"/s/%252e%252e%252F..%23%3Fx?token=" + t + b"&k=%26v")
    assert status == 303 and headers["location"] == "/s/%252e%252e%252F..%23%3Fx?k=%26v"
    for raw, where in [(b"//evil.example/", "/evil.example/"), (b"/\\evil.example/", "/%5Cevil.example/"),
                       (b"///evil.example", "/evil.example")]:
        status, headers, _, _ = _asgi(app, "GET", raw + b"?token=" + t)
        assert status == 303 and headers["location"] == where, raw


def test_json_bodies_are_refused_by_length_and_never_read_past_the_limit(served):
    out, state, guard, client = served
    app, h = client.app, _api_headers(guard)
    huge = [(b"content-length", str(200 << 20).encode())]
    status, _, body, read = _asgi(app, "POST", b"/api/q/ex1.d/decide", headers=h + huge, chunks=_many())
    assert status == 413 and read == 0 and b"too large" in body
    # chunked, or a Content-Length that lies: reading stops once the body passes the limit
    for extra in ([], [(b"content-length", b"10")]):
        status, _, body, read = _asgi(app, "POST", b"/api/q/ex1.d/decide", headers=h + extra,
                                      chunks=_many())
        assert status == 413 and read == 17, (extra, read)
        status, _, body, read = _asgi(app, "POST", b"/q/ex1.d/decide", headers=h[:1] + extra + [
            (b"content-type", b"application/x-www-form-urlencoded")], chunks=_many())
        assert status == 413 and read == 17, (extra, read)
    for bad in (b"-1", b"\xb2"):  # latin-1 superscript two: str.isdigit() says yes, int() says no
        status, _, body, _ = _asgi(app, "POST", b"/api/q/ex1.d/decide", headers=h + [(b"content-length", bad)])
        assert status == 400 and b"Content-Length" in body, bad
    assert not (out / "review" / "decisions.jsonl").exists()


def test_json_text_with_a_lone_surrogate_becomes_u_fffd_as_in_a_form(served, client):
    """JSON can spell a lone surrogate (\\ud800), which UTF-8 cannot write: it is replaced, as the form path
    replaces undecodable bytes, so the log stays UTF-8 and nothing answers 500."""
    out, state, guard, _ = served
    g = client.get("/api/q/ex1.d").json()["groups"][0]
    h = {"x-csrf-token": guard.csrf, "content-type": "application/json"}
    body = '{"group":"%s","version":"%s","points":1,"comment":"a\\ud800b"}' % (g["group"], g["version"])
    r = client.post("/api/q/ex1.d/decide", content=body.encode(), headers=h)
    assert r.status_code == 200 and r.json()["decision"]["comment"] == "a\ufffdb"
    assert json.loads((out / "review" / "decisions.jsonl").read_bytes().decode("utf-8"))["comment"] == "a\ufffdb"
    v = client.get("/api/q/ex1.d").json()["groups"][0]["version"]
    r = client.post("/api/q/ex1.d/decide", content=b'{"group":"\\ud800","version":"%s","points":1}' % v.encode(), headers=h)
    assert r.status_code == 404 and r.json()["error"] == "no such group"
    r = client.post("/api/q/ex1.d/split", content=b'{"student":"\\ud800","version":"%s"}' % v.encode(), headers=h)
    assert r.status_code == 404 and "no such student" in r.json()["error"]
    assert len((out / "review" / "decisions.jsonl").read_text().splitlines()) == 1


def test_api_fields_of_the_wrong_kind_are_400_and_an_unknown_group_404(served, client):
    out, state, guard, _ = served
    g = client.get("/api/q/ex1.d").json()["groups"][0]
    h = {"x-csrf-token": guard.csrf}
    ok = {"group": g["group"], "version": g["version"], "points": 1}
    for bad, field in [({"comment": {"x": [1, 2]}}, "comment"), ({"group": 7}, "group"), ({"version": None}, "version")]:
        r = client.post("/api/q/ex1.d/decide", json={**ok, **bad}, headers=h)
        assert r.status_code == 400 and r.json()["error"] == f"{field} must be text", bad
    r = client.post("/api/q/ex1.d/split", json={"student": ["dan"], "version": g["version"]}, headers=h)
    assert r.status_code == 400 and r.json()["error"] == "student must be text"
    r = client.post("/api/q/ex1.d/decide", json={**ok, "group": "nobody"}, headers=h)
    assert r.status_code == 404 and r.json()["error"] == "no such group"
    r = _decide(client, guard, "ex1.d", "nobody", g["version"], points="1")
    assert r.status_code == 404 and "no such group" in r.text
    assert not (out / "review" / "decisions.jsonl").exists()


def test_a_broken_multipart_body_is_400_and_prints_nothing(served, client, monkeypatch):
    """python-multipart logs its parse errors; with no handler anywhere Python's last-resort handler would put
    them on the server's stderr (pytest's own root handler hides that, so it is taken away here)."""
    import io
    import logging

    out, state, guard, _ = served
    stray = io.StringIO()
    monkeypatch.setattr(logging.root, "handlers", [])
    monkeypatch.setattr(logging, "lastResort", logging.StreamHandler(stray))
    for body in (b"garbage", b"--xyz\r\nnonsense\r\n\r\n"):
        r = client.post("/q/ex1.d/decide", content=body, headers={"content-type": "multipart/form-data; boundary=xyz"})
        assert r.status_code == 400, body
    assert stray.getvalue() == ""


def test_a_second_server_on_the_same_out_refuses_to_start(tmp_path, capsys, monkeypatch):
    """Two servers would both append with the same sequence numbers and overwrite each other's groups."""
    from grader.review import command

    out = small_class(tmp_path / "out", hostile=False)
    second = []

    def serve(app, sock):
        monkeypatch.setattr(command, "serve", lambda app, sock: sock.close())
        second.append(main(["review", str(out), "--no-browser"]))
        sock.close()
    monkeypatch.setattr(command, "serve", serve)
    assert main(["review", str(out), "--no-browser"]) == 0 and second == [2]
    err = [x for x in capsys.readouterr().err.splitlines() if "students," not in x]
    assert len(err) == 1 and "another `labgrader review`" in err[0] and str(out) in err[0]
    assert main(["review", str(out), "--no-browser"]) == 0


def test_students_whose_names_show_alike_have_their_own_pages(tmp_path):
    from grader.review.fabricate import graded_out
    from review_fixtures import GOOD, answers

    ff, fe = "dup\udcff", "dup\udcfe"  # folders b"dup\xff" and b"dup\xfe", both shown as "dup" + U+FFFD
    out = graded_out(tmp_path / "out", {ff: answers(GOOD), fe: answers("no idea"), "ok": answers(GOOD)})
    guard = Guard()
    guard.hosts.add("testserver")
    state = load_state(out)
    client = login(TestClient(make_app(state, guard), follow_redirects=False), guard)
    keys = [k for k in state.order if k != "ok"]
    page = client.get("/").text
    assert len(keys) == 2 and all(f'href="/s/{k}"' in page for k in keys) and page.count("dup\ufffd") >= 2
    assert {client.get(f"/api/s/{k}").json()["questions"]["ex1.d"]["answer"] for k in keys} == {GOOD, "no idea"}
    assert 'href="/s/ok"' in page and "4 answers" not in client.get("/q/ex1.d").text

"""The review's pages (HTML): class overview, question queue, student view; form posts that decide, split, publish.

Every action is a plain form post answered by a redirect (JavaScript only adds keys); a stale save
answers 409 with the current value, a bad one 400 with the reason.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse

from grader.reports.report import feedback_markdown
from grader.review.render import url_part
from grader.review.state import Invalid, NotFound, Stale, publish as publish_state

MAX_FORM = 1 << 20


def page(request, template: str, status: int = 200, **context) -> HTMLResponse:
    state = request.app.state.review
    html = request.app.state.templates.get_template(template).render(
        csrf=request.app.state.guard.csrf, title=f"Lab {state.spec.assignment_id}: {state.spec.title}",
        questions=state.questions, **context)
    return HTMLResponse(html, status_code=status)


async def read_body(request, limit: int, what: str = "body") -> bytes:
    """The request body, refused with 413 by its Content-Length before any of it is read, and again as soon as
    what arrives (chunked, or more than the header said) passes `limit`: a huge post never sits in memory."""
    length = request.headers.get("content-length")
    if length is not None:
        if not (length.strip().isascii() and length.strip().isdigit()):
            raise HTTPException(400, "bad Content-Length")
        if int(length) > limit:
            raise HTTPException(413, f"{what} too large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"{what} too large")
        chunks.append(chunk)
    return b"".join(chunks)


async def form_of(request) -> dict:
    """The posted form, after the CSRF check (403 without the token)."""
    body = await read_body(request, MAX_FORM, "form")
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form()
    if not request.app.state.guard.csrf_ok(form.get("_csrf") or request.headers.get("x-csrf-token")):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
    return form


def question_stats(state, q) -> dict:
    flagged = state.flagged(q.id)
    decided = sum(1 for s in flagged if state.decision(q.id, s) is not None)
    points = Counter(float((state.result(s)["questions"].get(q.id) or {}).get("points", 0.0)) for s in state.order)
    return {"q": q, "flagged": len(flagged), "decided": decided, "groups": len(state.groups.get(q.id, [])),
            "distribution": sorted(points.items()), "most": max(points.values(), default=1)}


async def overview(request):
    state = request.app.state.review
    stats = [question_stats(state, q) for q in state.questions]
    students = [(s, state.result(s)) for s in state.order]
    return page(request, "overview.html", stats=stats, students=students, label=state.label,
                waiting={s: [qid for qid, e in r["questions"].items() if e.get("review")] for s, r in students})


def _question(state, qid: str):
    q = state.question(qid)
    if q is None:
        raise HTTPException(404, "no such reviewed question")
    return q


async def queue(request):
    state = request.app.state.review
    q = _question(state, request.path_params["qid"])
    groups = state.group_views(q.id)
    provisional = {s: (state.base[s]["questions"].get(q.id) or {}).get("points") for g in groups for s in g.members}
    return page(request, "queue.html", q=q, groups=groups, answer=state.answer_text, provisional=provisional, label=state.label,
                describe=state.describe, decision_of=state.decision,
                done=sum(1 for g in groups if g.decision is not None))


def _points(raw) -> float | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise Invalid(f"points {raw[:20]!r} is not a number")
    if not math.isfinite(value):
        raise Invalid("points must be a finite number")
    return value


async def decide(request):
    state = request.app.state.review
    q = _question(state, request.path_params["qid"])
    form = await form_of(request)
    key = unquote(str(form.get("group", "")))
    try:
        state.decide(q.id, key, form.get("version", ""), items=form.getlist("items"),
                     points=_points(form.get("points")), comment=str(form.get("comment", ""))[:4000])
    except NotFound as e:
        raise HTTPException(404, str(e))
    except Stale as e:
        return page(request, "stale.html", 409, q=q, current=e.current)
    except Invalid as e:
        return page(request, "error.html", 400, message=str(e), back=f"/q/{url_part(q.id)}")
    return RedirectResponse(f"/q/{url_part(q.id)}#g-{url_part(key)}", status_code=303)


async def split(request):
    state = request.app.state.review
    q = _question(state, request.path_params["qid"])
    form = await form_of(request)
    student = unquote(str(form.get("student", "")))
    try:
        state.split(q.id, student, form.get("version", ""))
    except NotFound as e:
        raise HTTPException(404, str(e))
    except Stale as e:
        return page(request, "stale.html", 409, q=q, current=e.current)
    return RedirectResponse(f"/q/{url_part(q.id)}#g-{url_part(student)}", status_code=303)


def _student(state, name: str) -> dict:
    if name not in state.base:
        raise HTTPException(404, "no such student")
    return state.result(name)


async def student(request):
    state = request.app.state.review
    key = request.path_params["student"]
    result = _student(state, key)
    return page(request, "student.html", r=result, key=key, name=state.label(key), spec=state.spec,
                feedback=feedback_markdown(result, state.spec, state.hide),
                notebook=executed_path(state, result) is not None)


def executed_path(state, result: dict) -> Path | None:
    """The executed notebook inside OUT/, or None: a path that leaves OUT/ is never read."""
    rel = result.get("executed")
    if not isinstance(rel, str) or not rel:
        return None
    root = state.out.resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


async def notebook(request):
    state = request.app.state.review
    result = _student(state, request.path_params["student"])
    path = executed_path(state, result)
    if path is None:
        raise HTTPException(404, "no executed notebook")
    cache = request.app.state.notebooks
    key = (str(path), path.stat().st_mtime_ns)
    if key not in cache:
        cache[key] = await run_in_threadpool(render_notebook, path)
    return HTMLResponse(cache[key])


def render_notebook(path: Path) -> str:
    """nbconvert's HTML of a notebook; shown only in a sandboxed frame whose CSP runs no script."""
    import nbformat
    from nbconvert import HTMLExporter

    try:
        nb = nbformat.read(str(path), as_version=4)
        dirs = _template_dirs()
        exporter = HTMLExporter(template_name="classic", extra_template_basedirs=dirs, extra_template_paths=dirs)
        html, _ = exporter.from_notebook_node(nb)
    except Exception as e:  # a broken notebook is shown as one line, never a traceback
        from html import escape

        return f"<p>cannot render this notebook: {escape(type(e).__name__)}</p>"
    return html


def _template_dirs() -> list[str]:
    """nbconvert's templates where an interpreter's venv cannot see them (a venv over system site-packages)."""
    import sys

    import nbconvert

    roots = {Path(sys.prefix), Path(sys.base_prefix), Path(nbconvert.__file__).resolve().parents[4]}
    return [str(d) for d in (r / "share" / "jupyter" / "nbconvert" / "templates" for r in roots) if d.is_dir()]


async def publish(request):
    state = request.app.state.review
    await form_of(request)
    summary = await run_in_threadpool(publish_state, state)
    return page(request, "published.html", summary=summary, out=str(state.out))


async def _http_error(request, exc: HTTPException):
    if request.url.path.startswith("/api/"):
        from starlette.responses import JSONResponse

        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
    return page(request, "error.html", exc.status_code, message=f"{exc.status_code}: {exc.detail}", back="/")


ERROR_HANDLERS = {HTTPException: _http_error}

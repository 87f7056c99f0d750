"""The review's JSON API: the same state and actions as the pages, for scripts and the page's keys.

State-changing calls need the CSRF token in the X-CSRF-Token header (or a `_csrf` field).
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from grader.common.names import display
from grader.review.handlers import _question, _student, question_stats, read_body
from grader.review.state import Invalid, NotFound, Stale

MAX_BODY = 1 << 20


async def _body(request) -> dict:
    raw = await read_body(request, MAX_BODY)
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        raise HTTPException(400, "the body is not JSON")
    if not isinstance(data, dict):
        raise HTTPException(400, "the body must be a JSON object")
    token = request.headers.get("x-csrf-token") or data.get("_csrf")
    if not request.app.state.guard.csrf_ok(token):
        raise HTTPException(403, "missing or wrong CSRF token")
    return data


def _text(data: dict, field: str) -> str:
    """A text field of the body (400 when it is anything else), lone surrogates as U+FFFD as the form path has them."""
    value = data.get(field)
    if not isinstance(value, str):
        raise HTTPException(400, f"{field} must be text")
    return display(value)


async def questions(request):
    state = request.app.state.review
    return JSONResponse([{"id": s["q"].id, "flagged": s["flagged"], "decided": s["decided"], "groups": s["groups"]}
                         for s in (question_stats(state, q) for q in state.questions)])


async def queue(request):
    state = request.app.state.review
    q = _question(state, request.path_params["qid"])
    return JSONResponse({"question": q.id, "items": [{"id": i.id, "text": i.text, "points": i.points} for i in q.items],
                         "groups": [{"group": g.key, "members": g.members, "score": g.score, "version": g.version,
                                     "decision": state.describe(q.id, g.decision), "mixed": g.mixed}
                                    for g in state.group_views(q.id)]})


async def decide(request):
    state = request.app.state.review
    q = _question(state, request.path_params["qid"])
    data = await _body(request)
    points = data.get("points")
    if points is not None and (isinstance(points, bool) or not isinstance(points, (int, float))):
        return JSONResponse({"error": "points must be a number or null"}, status_code=400)
    items = data.get("items") or []
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        return JSONResponse({"error": "items must be a list of rubric item ids"}, status_code=400)
    group, version = _text(data, "group"), _text(data, "version")
    comment = "" if data.get("comment") is None else _text(data, "comment")
    try:
        entry = state.decide(q.id, group, version, items=[display(i) for i in items],
                             points=None if points is None else float(points), comment=comment[:4000])
    except NotFound as e:
        raise HTTPException(404, str(e))
    except Stale as e:
        return JSONResponse({"error": "stale: another save changed this group first", "current": e.current}, status_code=409)
    except Invalid as e:
        return JSONResponse({"error": str(e)}, status_code=400)
    return JSONResponse({"decision": state.describe(q.id, entry), "seq": entry["seq"]})


async def split(request):
    state = request.app.state.review
    q = _question(state, request.path_params["qid"])
    data = await _body(request)
    student, version = _text(data, "student"), _text(data, "version")
    try:
        entry = state.split(q.id, student, version)
    except NotFound as e:
        raise HTTPException(404, str(e))
    except Stale as e:
        return JSONResponse({"error": "stale: another save changed this group first", "current": e.current}, status_code=409)
    return JSONResponse({"seq": entry["seq"]})


async def student(request):
    state = request.app.state.review
    r = _student(state, request.path_params["student"])
    return JSONResponse({k: r[k] for k in ("student", "status", "reason", "total", "max", "review", "questions")})

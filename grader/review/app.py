"""The review web app: Starlette routes over one ReviewState, behind the token/CSRF/Host guard."""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from grader.review import apihandlers, handlers
from grader.review.render import environment
from grader.review.security import Guard, GuardMiddleware

STATIC = Path(__file__).with_name("static")
# python-multipart logs why a broken form does not parse; the 400 already says so, and with no handler of its own
# Python's last-resort handler would print each of those lines on the server's stderr
for _name in ("python_multipart", "multipart"):  # its logger's name now, and before 0.0.13
    logging.getLogger(_name).addHandler(logging.NullHandler())


def make_app(state, guard: Guard) -> Starlette:
    """The ASGI app; `guard.hosts` must hold the Host names the server answers to."""
    routes = [
        Route("/", handlers.overview, methods=["GET"]),
        Route("/q/{qid}", handlers.queue, methods=["GET"]),
        Route("/q/{qid}/decide", handlers.decide, methods=["POST"]),
        Route("/q/{qid}/split", handlers.split, methods=["POST"]),
        Route("/s/{student}", handlers.student, methods=["GET"]),
        Route("/s/{student}/notebook", handlers.notebook, methods=["GET"]),
        Route("/publish", handlers.publish, methods=["POST"]),
        Route("/api/questions", apihandlers.questions, methods=["GET"]),
        Route("/api/q/{qid}", apihandlers.queue, methods=["GET"]),
        Route("/api/q/{qid}/decide", apihandlers.decide, methods=["POST"]),
        Route("/api/q/{qid}/split", apihandlers.split, methods=["POST"]),
        Route("/api/s/{student}", apihandlers.student, methods=["GET"]),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers=handlers.ERROR_HANDLERS)
    app.state.review = state
    app.state.guard = guard
    app.state.templates = environment()
    app.state.notebooks = {}
    app.add_middleware(GuardMiddleware, guard=guard)
    return app

"""Who may talk to the review server: the token, the CSRF token, the Host header, and the headers on every answer.

The server prints a URL with a random token (as Jupyter does); the first visit trades it for an
HttpOnly, SameSite=Strict cookie. Every request without it gets 403. State-changing requests
also need the CSRF token each page carries, and the Host header must name this server, so a
web page elsewhere cannot reach it through DNS rebinding.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from urllib.parse import quote, quote_from_bytes, urlencode

from starlette.datastructures import URL, QueryParams
from starlette.responses import PlainTextResponse, RedirectResponse

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'")
# the executed notebook: its own scripts never run (sandbox without allow-scripts), its styles may
FRAME_CSP = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'self'"
SAFE_METHODS = ("GET", "HEAD")


@dataclass
class Guard:
    """The secrets of one server run and the Host names it answers to."""

    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    hosts: set[str] = field(default_factory=set)

    @property
    def cookie(self) -> str:
        return "labgrader_review_" + hashlib.sha256(self.token.encode()).hexdigest()[:10]

    def allow(self, host: str, port: int) -> None:
        """Answer to host:port, and to the loopback names when bound to loopback."""
        names = {host}
        if host in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::"):
            names |= {"127.0.0.1", "localhost", "[::1]"}
        if host in ("0.0.0.0", "::"):
            import socket

            names |= {socket.gethostname(), socket.getfqdn()}
        self.hosts |= {f"{n}:{port}" for n in names} | ({f"[{host}]:{port}"} if ":" in host else set())

    def url(self, host: str, port: int, path: str = "/") -> str:
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}{path}?{urlencode({'token': self.token})}"

    def csrf_ok(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(str(value).encode(), self.csrf.encode())


class GuardMiddleware:
    """Pure ASGI middleware: Host check, token or cookie, origin of POSTs, security headers on every answer."""

    def __init__(self, app, guard: Guard):
        self.app = app
        self.guard = guard

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self._refuse(scope, headers)
        if refusal is not None:
            return await refusal(scope, receive, _with_headers(send, scope))
        return await self.app(scope, receive, _with_headers(send, scope))

    def _refuse(self, scope, headers):
        g = self.guard
        if headers.get("host", "") not in g.hosts:
            return PlainTextResponse("403: unexpected Host header", status_code=403)
        url = URL(scope=scope)
        params = QueryParams(url.query)
        given = params.get("token")
        cookie = _cookies(headers.get("cookie", "")).get(g.cookie, "")
        auth = headers.get("authorization", "")
        bearer = auth[6:].strip() if auth.lower().startswith("token ") else ""
        if given is not None and hmac.compare_digest(given.encode(), g.token.encode()) and scope["method"] in SAFE_METHODS:
            rest = [(k, v) for k, v in params.multi_items() if k != "token"]
            target = same_site_path(scope) + ("?" + urlencode(rest) if rest else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(g.cookie, g.token, httponly=True, samesite="strict", path="/")
            return response
        if not any(v and hmac.compare_digest(v.encode(), g.token.encode()) for v in (cookie, bearer)):
            return PlainTextResponse("403: this review server needs its token: open the URL that "
                                     "`labgrader review` printed", status_code=403)
        if scope["method"] not in SAFE_METHODS:
            origin = headers.get("origin")
            if origin is not None and origin.split("://", 1)[-1] not in g.hosts:
                return PlainTextResponse("403: cross-origin request refused", status_code=403)
        return None


def same_site_path(scope) -> str:
    """The request's path as it was sent (its %-escapes kept: decoding them would turn a name's %2F or %23
    into a path or a fragment), with one leading "/" and no backslash, so a Location made from it stays here."""
    raw = scope.get("raw_path") or quote(scope.get("path", "/"), errors="replace").encode("ascii")
    path = quote_from_bytes(raw, safe="/%!$&'()*+,;=:@-._~")
    return "/" + path.lstrip("/")


def _cookies(header: str) -> dict[str, str]:
    out = {}
    for part in header.split(";"):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _with_headers(send, scope):
    framed = scope.get("path", "").endswith("/notebook")

    async def wrapped(message):
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"content-security-policy"]
            headers += [
                (b"content-security-policy", (FRAME_CSP if framed else CSP).encode()),
                (b"x-content-type-options", b"nosniff"),
                (b"referrer-policy", b"same-origin"),
                (b"cache-control", b"no-store"),
                (b"x-frame-options", b"SAMEORIGIN" if framed else b"DENY"),
                (b"cross-origin-opener-policy", b"same-origin"),
            ]
            message = {**message, "headers": headers}
        await send(message)
    return wrapped

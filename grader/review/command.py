"""`labgrader review OUT`: load the graded folder, bind the port, print the URL with its token, serve."""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys
from pathlib import Path

from grader.common.errors import UserError


def review_command(args) -> int:
    from grader.review.decisions import hold_lock

    def say(line: str) -> None:
        print(f"labgrader: {line}", file=sys.stderr, flush=True)

    host = args.host or "127.0.0.1"
    # held before the log is read (--reset and a torn line change it) until the server stops; a folder that is
    # not graded gets no OUT/review/ made in it: load_state says what is wrong with it
    lock = hold_lock(args.out) if (Path(args.out) / "results.json").is_file() else None
    try:
        return _serve(args, host, say)
    finally:
        if lock is not None:
            lock.close()


def _serve(args, host: str, say) -> int:
    from grader.review.app import make_app
    from grader.review.security import Guard
    from grader.review.state import load_state

    state = load_state(args.out, spec_path=getattr(args, "spec", None), reference_path=getattr(args, "reference", None),
                       reset=bool(getattr(args, "reset", False)), say=say)
    settle()
    if not is_loopback(host):
        say(f"warning: serving on {host}, not loopback: anyone who can reach it and learns the token can change grades")
    sock = bind(host, int(args.port))
    port = sock.getsockname()[1]
    guard = Guard()
    guard.allow(host, port)
    url = guard.url(host, port)
    flagged = sum(len(state.flagged(q.id)) for q in state.questions)
    groups = sum(len(g) for g in state.groups.values())
    say(f"{len(state.order)} students, {flagged} answers to review in {groups} groups; decisions go to "
        f"{state.log.path} (Ctrl-C stops the server; every confirmed decision is already on disk)")
    print(url, flush=True)
    if not getattr(args, "no_browser", False):
        import webbrowser

        try:
            webbrowser.open(url)
        except Exception:
            pass
    serve(make_app(state, guard), sock)
    return 0


def settle() -> None:
    """The loaded class lives as long as the server: keep it out of every garbage collection,
    so a page's cost grows with the page, not with the class times the pages."""
    import gc

    gc.collect()
    gc.freeze()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the URL is printed: a busy port is one line, exit 2."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: not a port number")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is busy; pass another --port, or --port 0 for any free one")
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}")
    except (OverflowError, TypeError) as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {e}")
    sock.set_inheritable(True)
    return sock


def serve(app, sock: socket.socket) -> None:
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False, server_header=False)
    uvicorn.Server(config).run(sockets=[sock])

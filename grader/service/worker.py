"""The training service's own process: the batcher and the memo, training from its main thread.

torch's intra-op threads ran about 1.9x slower when training was called from a thread of the grader
than from a main thread (benchmarks/RESULTS.md), so the grader starts this process
(grader/service/remote.py, with subprocess: it works inside Dask's daemonic workers too) and talks
to it over a socketpair in the frames of reference/wire.py. A reader thread takes the grader's
messages; the main thread trains (and a second trainer thread from -j 2, ServiceOptions.trainers).
The notebooks' sockets stay with the grader.

    python -m grader.service.worker FD
"""

from __future__ import annotations

import os
import socket
import sys
import threading

from reference import wire
from reference.trainrequest import MAX_PAYLOAD, RequestError, TrainAnswer, parse


class Sender:
    """Frames to the grader, one at a time (the reader thread and the trainer both send)."""

    def __init__(self, conn: socket.socket):
        self.conn, self.lock = conn, threading.Lock()

    def send(self, header: dict, tensors: dict | None = None) -> None:
        data = wire.encode(header, tensors)
        with self.lock:
            try:
                self.conn.sendall(data)
            except OSError:
                pass

    def answer(self, rid: int, answer, stats) -> None:
        if isinstance(answer, TrainAnswer):
            header, tensors = answer.frame()
            self.send({**header, "op": "answer", "id": rid, "stats": dict(stats)}, tensors)
        else:
            self.send({**answer, "op": "answer", "id": rid, "stats": dict(stats)})


class _Session:
    """A notebook's session as the batcher sees it: turns go round these, and epochs are charged to them."""

    def __init__(self, sid: int, out: Sender):
        self.sid, self.out = sid, out

    def charge(self, seconds: float) -> None:
        self.out.send({"op": "charge", "session": self.sid, "seconds": seconds})


def serve(read, engine, out: Sender, flags: dict) -> None:
    """The grader's messages, until it closes (or dies: end of file); then the batcher stops."""
    batcher, sessions = engine.batcher, {}
    while True:
        try:
            header, tensors = wire.read_frame(read, max_payload=MAX_PAYLOAD)
        except (EOFError, OSError, wire.WireError):
            break
        op = header.get("op")
        if op == "submit":
            rid = header["id"]
            session = sessions.setdefault(header["session"], _Session(header["session"], out))
            try:
                req = parse(header["request"], tensors, input_dim=engine.input_dim, classes=engine.classes)
                fut, how, key = batcher.submit(req, session)
            except RequestError as e:  # what the grader could not check without torch: refused, with the reason
                out.send({"op": "accepted", "id": rid, "how": "failed", "key": ""})
                out.answer(rid, {"error": str(e)}, batcher.stats)
                continue
            except Exception as e:
                out.send({"op": "accepted", "id": rid, "how": "failed", "key": ""})
                out.answer(rid, {"local": f"the training service failed ({type(e).__name__}: {str(e)[:120]})"}, batcher.stats)
                continue
            out.send({"op": "accepted", "id": rid, "how": how, "key": key})
            fut.add_done_callback(lambda f, rid=rid: out.answer(rid, f.result(), batcher.stats))
        elif op == "release":
            batcher.release(header["key"], sessions.get(header["session"]))
        elif op == "waiting":
            flags["all"] = bool(header["all"])
            batcher.wake()
        elif op == "close":
            break
    batcher.close()


def main(argv: list[str]) -> int:
    from grader.service.engine import ServiceOptions, open_engine, warm_up

    conn = socket.socket(fileno=int(argv[0]))
    out, read = Sender(conn), wire.socket_reader(conn)
    flags = {"all": False}
    try:
        header, _ = wire.read_frame(read, max_payload=0)
        options = ServiceOptions(**header["options"])
        engine = open_engine(options, header["data_dir"], all_waiting=lambda: flags["all"], thread=False,
                             log=lambda line: print(line, file=sys.stderr, flush=True))
    except Exception as e:  # the grader says this line and grades without the service
        out.send({"op": "failed", "reason": str(e).splitlines()[0][:300] if str(e) else type(e).__name__})
        return 1
    out.send({"op": "hello", **engine.hello()})
    threading.Thread(target=serve, args=(read, engine, out, flags), name="service-reader", daemon=True).start()
    try:
        warm_up(engine)
    except Exception as e:  # a first run pays what this would have; the service still serves
        print(f"warm-up failed: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr, flush=True)
    engine.batcher.run()
    out.send({"op": "stats", "stats": dict(engine.batcher.stats), "final": True})
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stderr.flush()
    os._exit(code)  # every answer and memo entry is written; tearing down torch would only keep the grader waiting

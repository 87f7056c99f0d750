"""The training service: trusted, on the host, reachable by each sandbox only through its own Unix socket.

`labgrader grade` starts one service; every executed notebook gets a session, a socket that
is bind-mounted into that notebook's sandbox alone (no network is opened), with that
submission's quota of runs and epochs. Each request is read with size limits, checked field
by field (reference/trainrequest.py), counted against the quota and handed to the batcher;
a bad request gets its reason back and the service keeps serving every other connection.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import itertools
import os
import shutil
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from grader.common.errors import UserError
from grader.execution.limits import Limits
from grader.service.engine import ServiceOptions
from reference.kit_report import HISTORY_KEYS

MAX_CONNECTIONS = 4
MIB = 1 << 20
POLL_S = 0.5
SEND_TIMEOUT_S = 60.0
INIT_VERDICTS = 4096


@dataclass(frozen=True)
class Quota:
    """One notebook's share of the service: runs, weighted epochs, seconds of training, memory per request."""

    runs: int
    epochs: int
    seconds: float = Limits.train_seconds
    memory_mb: int = Limits.train_memory_mb

    @classmethod
    def from_limits(cls, limits: Limits) -> "Quota":
        return cls(limits.train_runs, limits.train_epochs, limits.train_seconds, limits.train_memory_mb)


@dataclass
class SessionStats:
    requests: int = 0
    runs: int = 0
    epochs: float = 0
    seconds: float = 0.0
    served: collections.Counter = field(default_factory=collections.Counter)


class TrainingService:
    """The sessions' side of the service, in the grader; the training itself runs in its own process
    (grader/service/remote.py -> worker.py), or here with ServiceOptions(process=False)."""

    def __init__(self, options: ServiceOptions, data_dir, say=None):
        self.options = options
        self.data_dir = Path(data_dir)
        self.say = say or (lambda line: print(f"labgrader: {line}", file=sys.stderr))
        self.batcher = None
        self.sessions: set = set()
        self.lock = threading.Lock()
        self.refused = 0
        self.root: Path | None = None
        self.info: dict = {}
        self.counter = itertools.count()
        self.inits: dict[str, str] = {}

    # lifecycle ---------------------------------------------------------------------------------

    def start(self, wait: bool = True, on_ready=None) -> "TrainingService":
        """Start what trains (its process, or the batcher here); UserError when it cannot.

        wait=False returns at once and loads in the background, so the first notebooks start while the
        service loads torch and the data; a request waits for it, and if it cannot start, every notebook
        trains in its sandbox (`self.failed` says why; on_ready(None) or on_ready(reason) is called)."""
        self.root = Path(tempfile.mkdtemp(prefix="labgrader-train-"))
        self.ready, self.failed, self.closing = threading.Event(), None, False
        self.starter = threading.Thread(target=self._load, args=(on_ready,), name="train-service-start", daemon=True)
        self.starter.start()
        if wait:
            self.starter.join()
            if self.failed is not None:
                self.close()
                raise UserError(self.failed)
        return self

    def _load(self, on_ready) -> None:
        try:
            from grader.service.engine import open_engine
            from grader.service.remote import ServiceProcess

            if self.options.process:
                batcher = ServiceProcess(self.options, self.data_dir, self.root, self._all_waiting, self.say)
                info = batcher.start()
            else:
                engine = open_engine(self.options, self.data_dir, all_waiting=self._all_waiting)
                batcher, info = engine.batcher, engine.hello()
            self.fingerprint, self.input_dim, self.classes = (info[k] for k in ("fingerprint", "input_dim", "classes"))
            self.threads = info["threads"]
            self.info, self.batcher = info, batcher
        except UserError as e:
            self.failed = str(e)
        except Exception as e:  # one line for the grader; grading goes on without the service
            self.failed = f"{type(e).__name__}: {str(e)[:200]}"
        self.ready.set()
        if on_ready is not None:
            on_ready(self.failed)

    def wait_ready(self) -> bool:
        """True once the service serves; False when it could not start."""
        self.ready.wait()
        return self.failed is None and self.batcher is not None

    @property
    def could_not_start(self) -> bool:
        """True once it is known that the service cannot serve; a request waits while it still starts."""
        return self.ready.is_set() and (self.failed is not None or self.batcher is None)

    @property
    def started(self) -> bool:
        return self.ready.is_set() and self.failed is None and self.batcher is not None

    def close(self) -> None:
        for s in list(self.sessions):
            s.close()
        starter = getattr(self, "starter", None)
        if starter is not None and starter is not threading.current_thread():
            starter.join()
        if self.batcher is not None:
            self.batcher.close()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def describe(self) -> str:
        where = "in its own process" if self.options.process else "in the grader's process"
        info = self.info
        trainers = info.get("trainers") or 1
        runs = f", {trainers} runs at once" if trainers > 1 else ""
        return (f"{info.get('data_kind')} data from its {info.get('data_from')}, on {info.get('device')} with "
                f"{info.get('threads')} thread(s) per run{runs} {where}, memo {info.get('memo_dir')}")

    def summary(self) -> dict:
        stats = dict(self.batcher.stats) if self.batcher else {}
        out = {"device": str(self.info.get("device")), "threads": self.info.get("threads"),
               "trainers": self.info.get("trainers") or 1,
               "data": self.info.get("data_kind"), "data_from": self.info.get("data_from"),
               "memo_dir": self.info.get("memo_dir"),
               "from_memo": stats.get("memo", 0), "joined": stats.get("joined", 0),
               "trained": stats.get("trained", 0), "batches": stats.get("batches", 0),
               "largest_batch": stats.get("largest_batch", 0), "abandoned": stats.get("abandoned", 0),
               "refused": self.refused, "process": bool(self.options.process)}
        if self.options.process and self.batcher is not None:
            out["failures"], out["restarts"] = self.batcher.failures, self.batcher.restarts
        return out

    # sessions ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def session(self, name: str, quota: Quota, uid: int | None = None, record: list | None = None):
        """A socket for one notebook's execution; -> its host path. Closed (and its connections cut) on exit.

        record: a list that gets one entry per run the service answered, in request order (the trusted
        runs record: config, how it was served, history), for the evidence (grader/assessment/runs.py)."""
        if self.root is None:
            raise RuntimeError("the training service is not started")
        s = _Session(self, name, quota, uid, record)
        with self.lock:
            self.sessions.add(s)
        try:
            yield s.path
        finally:
            s.close()
            with self.lock:
                self.sessions.discard(s)
            if self.batcher is not None:
                self.batcher.wake()

    def init_kind(self, params) -> str:
        """Whether the starting weights are "default" or "custom" (trainrequest.default_init), checked once per
        distinct weights: the check costs tens of ms of the grader's CPU before each answer goes back, and a
        class seeded alike sends the same weights for most of its runs."""
        from reference.trainrequest import default_init, params_digest

        digest = params_digest(params)
        with self.lock:
            kind = self.inits.get(digest)
        if kind is None:
            kind = "default" if default_init(params) else "custom"
            with self.lock:
                if len(self.inits) >= INIT_VERDICTS:
                    self.inits.clear()
                self.inits[digest] = kind
        return kind

    def _all_waiting(self) -> bool:
        with self.lock:
            return bool(self.sessions) and all(s.waiting for s in self.sessions)


class _Session:
    def __init__(self, service: TrainingService, name: str, quota: Quota, uid: int | None, record: list | None = None):
        self.service, self.name, self.quota = service, name, quota
        self.record = record
        self.stats = SessionStats()
        self.waiting = 0
        self.lock = threading.Lock()
        self.conns: set[socket.socket] = set()
        self.closed = False
        self.path = service.root / f"{next(service.counter)}.sock"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        os.chmod(self.path, 0o600)
        if uid is not None:
            os.chown(self.path, uid, uid)
        self.listener.listen(MAX_CONNECTIONS)
        self.thread = threading.Thread(target=self._accept, name=f"train-session-{name}", daemon=True)
        self.thread.start()

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            conns = list(self.conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self.closed or len(self.conns) >= MAX_CONNECTIONS:
                    conn.close()
                    continue
                self.conns.add(conn)
            try:
                threading.Thread(target=self._serve, args=(conn,), name=f"train-conn-{self.name}", daemon=True).start()
            except RuntimeError:  # no thread to spare: this connection is refused, the session goes on
                with self.lock:
                    self.conns.discard(conn)
                conn.close()

    def _serve(self, conn: socket.socket) -> None:
        from reference import wire

        try:
            self._requests(conn, wire.socket_reader(conn))
        except Exception as e:  # never a traceback on the grader's stderr; this connection ends with a reason
            self._refuse(conn, f"the training service could not handle this request ({type(e).__name__})")
        finally:
            with self.lock:
                self.conns.discard(conn)
            conn.close()

    def _requests(self, conn: socket.socket, read) -> None:
        from reference import wire
        from reference.trainrequest import MAX_PAYLOAD, RequestError, TrainAnswer, parse

        while True:
            try:
                header, tensors = wire.read_frame(read, max_payload=MAX_PAYLOAD, arrays=True)
            except (EOFError, OSError):
                return
            except wire.WireError as e:
                self._refuse(conn, str(e))
                return
            if not self.service.wait_ready():
                self._send(conn, {"ok": False, "local": True,
                                  "reason": f"the training service did not start ({self.service.failed})"})
                continue
            try:
                req = parse(header, tensors, input_dim=self.service.input_dim, classes=self.service.classes)
                self._admit(req)
            except RequestError as e:
                self._refuse(conn, str(e))
                continue
            if req.data != self.service.fingerprint:
                self._send(conn, {"ok": False, "local": True,
                                  "reason": "the notebook's data are not the grader's data set; it trains in the notebook"})
                continue
            try:
                answer, how = self._wait(req)
            except RequestError as e:
                self._refuse(conn, str(e))
                continue
            except Exception as e:  # this connection's notebook trains locally; the service goes on
                answer, how = {"local": f"the training service failed ({type(e).__name__}: {str(e)[:120]})"}, "failed"
            self._note_run(req, answer, how)
            if isinstance(answer, TrainAnswer):
                self._send(conn, *answer.frame(served=how))
            elif "error" in answer:
                self._refuse(conn, answer["error"])
            else:
                self._send(conn, {"ok": False, "local": True, "reason": answer["local"]})

    def _note_run(self, req, answer, how: str) -> None:
        """One entry of the runs record: a run the service trained (or took from the memo, or joined), saw
        diverge, or could not train (it failed); the notebook then trains it and reports it itself."""
        from reference.trainrequest import TrainAnswer

        if self.record is None:
            return
        if isinstance(answer, TrainAnswer):
            served, history = how, {k: [float(v) for v in answer.history[k]] for k in HISTORY_KEYS}
        elif isinstance(answer, dict) and answer.get("diverged"):
            served, history = "diverged", None
        elif isinstance(answer, dict) and "local" in answer:
            served, history = "failed", None
        else:
            return
        config = {"lr": req.lr, "batch_size": req.batch_size, "momentum": req.momentum, "hidden": req.hidden,
                  "optimizer": "SGD"}
        init = self.service.init_kind(req.params)
        with self.lock:
            self.record.append({"config": config, "epochs": req.epochs, "source": "service", "served": served,
                                "history": history, "init": init})

    def _admit(self, req) -> None:
        from reference.trainrequest import RequestError

        cost = epoch_cost(req)
        need = self.service.batcher.request_bytes(req)
        with self.lock:
            st, q = self.stats, self.quota
            if need > q.memory_mb * MIB:
                raise RequestError(f"this run would take about {-(-need // MIB)} MiB in the training service (batch size "
                                   f"{req.batch_size}, {req.hidden} hidden units), over the limit of {q.memory_mb} MiB "
                                   "per request (--train-memory)")
            if st.seconds >= q.seconds:
                raise RequestError(self._time_used())
            if st.runs + 1 > q.runs:
                raise RequestError(f"this submission has used its quota of {q.runs} training runs (--train-runs)")
            if st.epochs + cost > q.epochs:
                weighted = f" (counted as {cost:g}: batch size {req.batch_size}, {req.hidden} hidden units)" if cost != req.epochs else ""
                raise RequestError(f"{req.epochs} more epochs{weighted} would exceed this submission's quota of {q.epochs} "
                                   f"training epochs ({st.epochs:g} used; --train-epochs)")
            st.requests += 1
            st.runs += 1
            st.epochs += cost

    def _time_used(self) -> str:
        return (f"this submission has used its {self.quota.seconds:g} s of training time in the training service "
                "(--train-time)")

    def charge(self, seconds: float) -> None:
        """This session's share of an epoch the service just trained for it."""
        with self.lock:
            self.stats.seconds += seconds

    def _wait(self, req):
        """The answer, ({"local": ...}, how) once this session closed while its run still waited or trained,
        or ({"error": ...}, how) once the session used up its training time."""
        batcher = self.service.batcher
        fut, how, key = batcher.submit(req, session=self)
        with self.lock:  # only once the request is pending: the batcher must not see every session waiting before it is
            self.waiting += 1
        batcher.wake()
        released = False
        try:
            while True:
                try:
                    answer = fut.result(timeout=POLL_S)
                    break
                except concurrent.futures.TimeoutError:
                    if released:
                        continue
                    if self.closed:
                        batcher.release(key, self)
                        released = True
                    elif self.stats.seconds > self.quota.seconds:
                        batcher.release(key, self)
                        answer = {"error": self._time_used()}
                        break
        finally:
            with self.lock:
                self.waiting -= 1
            batcher.wake()
        self.stats.served[how] += 1
        return answer, how

    def _refuse(self, conn, reason: str) -> None:
        with self.service.lock:
            self.service.refused += 1
        self._send(conn, {"ok": False, "error": reason})

    def _send(self, conn, header: dict, tensors: dict | None = None) -> None:
        from reference import wire

        try:
            conn.settimeout(SEND_TIMEOUT_S)
            conn.sendall(wire.encode(header, tensors))
            conn.settimeout(None)
        except OSError:
            pass


def epoch_cost(req) -> float:
    """Epochs at the cost of the lab's own (batch size 128, 512 hidden units): more steps or a wider
    layer count more, so the quota bounds the service's time, not just a number of passes."""
    return req.epochs * max(1.0, 128 / req.batch_size) * max(1.0, req.hidden / 512)


def say_summary(service: TrainingService, say=lambda line: print(f"labgrader: {line}", file=sys.stderr)) -> None:
    s = service.summary()
    say(f"training service ({service.describe()}): {s['trained']} run(s) trained in {s['batches']} batch(es) "
        f"(largest {s['largest_batch']}), {s['from_memo']} answered from the memo, {s['joined']} joined a run in "
        f"flight, {s['refused']} request(s) refused"
        + (f"; its process failed {s['failures']} time(s) and was restarted {s['restarts']} time(s)" if s.get("failures") else ""))

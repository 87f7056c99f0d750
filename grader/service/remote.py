"""The training service's own process seen from the grader: the batcher's calls, over a socketpair.

A crash of that process is said once and it is started again once; the notebooks waiting on it get
"train it in your sandbox" with the reason, and so does every request after a second crash.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

from grader.common.errors import UserError
from grader.common.kernels import compute_env
from grader.common.text import one_line
from reference import wire
from reference.trainrequest import MAX_HIDDEN, MAX_PAYLOAD, TrainAnswer, answer_payload, build

START_TIMEOUT_S = 600.0
RESTARTS = 1
ACK_TIMEOUT_S = 120.0


class _Child:
    """One started worker process and what is outstanding with it."""

    def __init__(self, proc: subprocess.Popen, conn: socket.socket, log: Path):
        self.proc, self.conn, self.log = proc, conn, log
        self.read = wire.socket_reader(conn)
        self.acks: dict[int, Future] = {}
        self.answers: dict[int, Future] = {}
        self.stats: collections.Counter = collections.Counter()
        self.send_lock = threading.Lock()

    def send(self, header: dict, tensors: dict | None = None) -> bool:
        data = wire.encode(header, tensors)
        with self.send_lock:
            try:
                self.conn.sendall(data)
                return True
            except OSError:
                return False

    def why_stopped(self) -> str:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            what = "stopped answering"
        elif code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            what = f"was killed by {name}"
        else:
            what = f"exited with code {code}"
        last = ""
        try:
            lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
            last = f"; its log's last line: {one_line(lines[-1], 160)}" if lines else ""
        except OSError:
            pass
        return f"the training service's process {what}{last}"


class ServiceProcess:
    """submit / release / wake / close / stats like grader.service.batcher.Batcher, in another process."""

    def __init__(self, options, data_dir, root: Path, all_waiting, say):
        self.options = dataclasses.replace(options, process=True)
        self.data_dir, self.root, self.all_waiting, self.say = str(data_dir), root, all_waiting, say
        self.lock = threading.Lock()
        self.ids = itertools.count()
        self.sids: dict[object, int] = {}
        self.sessions: dict[int, object] = {}
        self.child: _Child | None = None
        self.ready = threading.Event()
        self.closing = False
        self.failures = 0
        self.restarts = 0
        self.gone: str | None = None
        self.ended: collections.Counter = collections.Counter()
        self.hello: dict = {}

    # lifecycle ---------------------------------------------------------------------------------

    def start(self) -> dict:
        """-> the worker's hello (device, threads, data kind, fingerprint, shape); UserError if it cannot start."""
        self.hello = self._spawn()
        return self.hello

    def _spawn(self) -> dict:
        number = self.failures
        log = self.root / f"service-{number}.log"
        ours, theirs = socket.socketpair()
        env = {**os.environ, **compute_env(self.options.threads or os.cpu_count() or 1)}
        try:
            with open(log, "wb") as sink:
                proc = subprocess.Popen([sys.executable, "-m", "grader.service.worker", str(theirs.fileno())],
                                        pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
                                        env=env)
        except OSError as e:
            ours.close()
            raise UserError(f"the training service's process could not start ({one_line(e, 160)})") from None
        finally:
            theirs.close()
        child = _Child(proc, ours, log)
        child.send({"op": "start", "options": dataclasses.asdict(self.options), "data_dir": self.data_dir})
        ours.settimeout(START_TIMEOUT_S)
        try:
            header, _ = wire.read_frame(child.read, max_payload=0, arrays=True)
        except (EOFError, OSError, wire.WireError):
            ours.close()
            proc.kill()
            raise UserError(child.why_stopped()) from None
        ours.settimeout(None)
        if header.get("op") != "hello":
            ours.close()
            proc.wait(timeout=30)
            raise UserError(one_line(str(header.get("reason", "it did not start")), 300))
        with self.lock:
            if not self.closing:
                self.child = child
        if self.child is not child:
            child.send({"op": "close"})
            proc.wait(timeout=60)
            raise UserError("the grader is closing the training service")
        self.ready.set()
        threading.Thread(target=self._read, args=(child,), name="service-process-reader", daemon=True).start()
        return header

    def close(self) -> None:
        with self.lock:
            self.closing = True
            child = self.child
        if child is not None:
            child.send({"op": "close"})
            try:
                child.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
            self._settle(child, "the training service stopped")

    # the batcher's calls -----------------------------------------------------------------------

    def request_bytes(self, req) -> int:
        from reference.memsize import request_bytes

        return request_bytes(self.hello["shape"], req.batch_size, req.hidden)

    def submit(self, req, session=None) -> tuple[Future, str, str]:
        if not self.ready.wait(START_TIMEOUT_S) or self.gone:
            return _done({"local": self.gone or "the training service is not running"}), "failed", ""
        with self.lock:
            child = self.child
            if child is None:
                return _done({"local": self.gone or "the training service is restarting"}), "failed", ""
            if session not in self.sids:
                self.sids[session] = len(self.sids)
                self.sessions[self.sids[session]] = session
            sid, rid = self.sids[session], next(self.ids)
            ack, answer = Future(), Future()
            child.acks[rid], child.answers[rid] = ack, answer
        header, tensors = build(data=req.data, lr=req.lr, momentum=req.momentum, batch_size=req.batch_size,
                                epochs=req.epochs, params=req.params, rng=req.rng)
        child.send({"op": "submit", "id": rid, "session": sid, "request": header}, tensors)
        try:
            how, key = ack.result(timeout=ACK_TIMEOUT_S)
        except Exception:
            how, key = "failed", ""
            answer.done() or answer.set_result({"local": "the training service did not answer"})
        return answer, how, key

    def release(self, key: str, session=None) -> None:
        with self.lock:
            child, sid = self.child, self.sids.get(session)
        if child is not None and sid is not None and key:
            child.send({"op": "release", "key": key, "session": sid})

    def wake(self) -> None:
        with self.lock:
            child = self.child
        if child is not None:
            child.send({"op": "waiting", "all": bool(self.all_waiting())})

    @property
    def stats(self) -> collections.Counter:
        with self.lock:
            child = self.child.stats if self.child is not None else collections.Counter()
            total = self.ended + child
            total["largest_batch"] = max(self.ended["largest_batch"], child["largest_batch"])
        return total

    # the worker's messages ---------------------------------------------------------------------

    def _read(self, child: _Child) -> None:
        limit = max(MAX_PAYLOAD, answer_payload(MAX_HIDDEN, 784, 10) * 2)
        while True:
            try:
                header, tensors = wire.read_frame(child.read, max_payload=limit, arrays=True)
            except (EOFError, OSError, wire.WireError):
                break
            op = header.get("op")
            if isinstance(header.get("stats"), dict):
                child.stats = collections.Counter(header["stats"])
            if op == "accepted":
                fut = child.acks.pop(header.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result((header.get("how", "failed"), header.get("key", "")))
            elif op == "answer":
                fut = child.answers.pop(header.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(_answer(header, tensors))
            elif op == "charge":
                session = self.sessions.get(header.get("session"))
                charge = getattr(session, "charge", None)
                if charge is not None:
                    charge(float(header.get("seconds", 0.0)))
        self._ended(child)

    def _ended(self, child: _Child) -> None:
        with self.lock:
            closing = self.closing
            if self.child is child:
                self.child = None
                self.ready.clear()
            self.ended.update({k: v for k, v in child.stats.items() if k != "largest_batch"})
            self.ended["largest_batch"] = max(self.ended["largest_batch"], child.stats["largest_batch"])
            child.stats = collections.Counter()
        if closing:
            self._settle(child, "the training service stopped")
            self.ready.set()
            return
        reason = child.why_stopped()
        self.failures += 1
        again = self.restarts < RESTARTS
        if again:
            self.say(f"{reason}; starting it again (once); the notebooks waiting on it train in their sandboxes")
        self._settle(child, f"{reason}; this run trains in the notebook")
        child.conn.close()
        if again:
            self.restarts += 1
            try:
                self._spawn()
                return
            except UserError as e:
                reason = str(e)
        self.gone = f"{reason}; the training service is not restarted again, so every run trains in its notebook"
        self.say(self.gone)
        self.ready.set()

    def _settle(self, child: _Child, reason: str) -> None:
        """Every request still outstanding with this child: "train it in the notebook", with the reason."""
        with self.lock:
            acks, answers = list(child.acks.values()), list(child.answers.values())
            child.acks.clear()
            child.answers.clear()
        for fut in acks:
            if not fut.done():
                fut.set_result(("failed", ""))
        for fut in answers:
            if not fut.done():
                fut.set_result({"local": reason})


def _done(value) -> Future:
    fut: Future = Future()
    fut.set_result(value)
    return fut


def _answer(header: dict, tensors: dict):
    if header.get("ok"):
        try:
            return TrainAnswer.from_frame(header, tensors)
        except Exception:
            return {"local": "the training service's answer was incomplete"}
    if "error" in header:
        return {"error": str(header["error"])}
    return {"local": str(header.get("local", "the training service did not train this run")),
            "diverged": header.get("diverged") is True}

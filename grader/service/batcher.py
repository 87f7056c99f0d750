"""Turn training requests into answers: from the memo, by joining an identical request in flight,
or by training every waiting request of one group together, an epoch at a time, in turn.

`trainers` threads train, each job in one of them at a time; requests wait on futures. A group
(batch size, epochs, hidden width) becomes a job as soon as every open session is waiting for an
answer (no more requests can come) or `gather_s` after its oldest request arrived, so concurrent
notebooks share one pass. Jobs advance one epoch per turn, and the turns go round the sessions: one
session's long run holds another's short one for at most one epoch of its own; with two trainers,
two sessions' jobs train side by side instead of in turn (the same numbers: each op has the same
threads). Between epochs, a run that no session waits for any more (its notebook ended) leaves its
job, and each epoch's time is charged to the sessions waiting on it (the session quota bounds
training time).
"""

from __future__ import annotations

import collections
import math
import threading
import time
from concurrent.futures import Future
from typing import Callable

import torch

from reference.memsize import request_bytes
from reference.trainer import Data, EpochBatch, RunSpec, data_shape
from reference.trainrequest import TrainAnswer, TrainRequest

ABANDONED = {"local": "abandoned"}


class Batcher:
    """thread=False: the caller trains, by calling run() (the service's own process trains from its main
    thread, and from trainers - 1 more)."""

    def __init__(self, data: Data, kit_data: tuple, memo, trainer_id: str, *, gather_s: float = 0.5,
                 max_runs: int = 16, all_waiting: Callable[[], bool] = lambda: False, thread: bool = True,
                 log: Callable[[str], None] = lambda line: None, trainers: int = 1):
        self.data, self.kit_data, self.memo, self.trainer_id = data, kit_data, memo, trainer_id
        self.gather_s, self.max_runs, self.all_waiting, self.log = gather_s, max_runs, all_waiting, log
        self.trainers = max(1, int(trainers))
        self.busy: set[_Job] = set()
        self.cond = threading.Condition()
        self.pending: dict[str, tuple[TrainRequest, Future, float]] = {}
        self.inflight: dict[str, Future] = {}
        self.waiters: dict[str, collections.Counter] = {}
        self.jobs: list[_Job] = []
        self.turns: list = []
        self.stats = collections.Counter()
        self.closed = False
        self.shape = data_shape(data)
        self.thread = None
        if thread:
            self.thread = threading.Thread(target=self.run, name="train-service", daemon=True)
            self.thread.start()

    def request_bytes(self, req: TrainRequest) -> int:
        return request_bytes(self.shape, req.batch_size, req.hidden)

    def submit(self, req: TrainRequest, session=None) -> tuple[Future, str, str]:
        """-> (future of a TrainAnswer or {"local": reason}, how it is served: memo, joined or trained, key).

        session: who waits (any hashable); turns go round sessions, and session.charge(seconds),
        when it has one, gets its share of each epoch's time."""
        req = req.as_torch()
        key = req.key(self.trainer_id)
        with self.cond:
            if key in self.inflight:
                return self._join(key, session), "joined", key
        stored = self.memo.get(key) if self.memo is not None else None
        if stored is not None:
            with self.cond:
                self.stats["memo"] += 1
            done: Future = Future()
            done.set_result(stored)
            return done, "memo", key
        with self.cond:
            if key in self.inflight:
                return self._join(key, session), "joined", key
            fut: Future = Future()
            self.inflight[key] = fut
            self.waiters[key] = collections.Counter({session: 1})
            self.pending[key] = (req, fut, time.monotonic())
            self._take_turn(session)
            self.cond.notify_all()
        return fut, "trained", key

    def _join(self, key: str, session) -> Future:
        self.stats["joined"] += 1
        self.waiters[key][session] += 1
        self._take_turn(session)
        return self.inflight[key]

    def _take_turn(self, session) -> None:
        if session not in self.turns:
            self.turns.append(session)

    def release(self, key: str, session=None) -> None:
        """A waiter gave up (its notebook ended): a run nobody waits for any more is not trained,
        or leaves its job at the next epoch boundary."""
        with self.cond:
            waiting = self.waiters.get(key)
            if waiting is None:
                return
            waiting[session] -= 1
            if waiting[session] <= 0:
                del waiting[session]
            if not waiting and key in self.pending:
                _, fut, _ = self.pending.pop(key)
                del self.inflight[key], self.waiters[key]
                self.stats["abandoned"] += 1
                fut.set_result(ABANDONED)

    def wake(self) -> None:
        """A session started waiting or closed: maybe every session is waiting now."""
        with self.cond:
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            for _, fut, _ in self.pending.values():
                fut.set_result({"local": "the training service stopped"})
            self.pending.clear()
            self.cond.notify_all()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=60)
        with self.cond:
            for job in self.jobs:
                for fut in job.futs:
                    if not fut.done():
                        fut.set_result({"local": "the training service stopped"})
            self.jobs.clear()

    # scheduling --------------------------------------------------------------------------------

    def _form_jobs(self) -> float | None:
        """Pending groups whose gathering is over become jobs; -> seconds until the next one is due."""
        while self.pending:
            oldest = min(t for _, _, t in self.pending.values())
            left = oldest + self.gather_s - time.monotonic()
            if left > 0 and not self.all_waiting():
                return left
            first = min(self.pending.items(), key=lambda kv: kv[1][2])[1][0].group
            keys = [k for k, (r, _, _) in self.pending.items() if r.group == first][:self.max_runs]
            group = [(k, *self.pending.pop(k)[:2]) for k in keys]
            self.jobs.append(_Job(self, group))
            self.log(f"training {len(group)} run(s): batch size {first[0]}, {first[1]} epoch(s), {first[2]} hidden units")
            self.stats["batches"] += 1
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(group))
        return None

    def _next_job(self) -> "_Job | None":
        """The job of the next session in turn that no other trainer holds; the session goes to the back
        of the line, and the job is this trainer's until _done()."""
        with self.cond:
            while not self.closed:
                due = self._form_jobs()
                for session in list(self.turns):
                    job = next((j for j in self.jobs if j not in self.busy and session in j.sessions()), None)
                    if job is not None:
                        self.turns.remove(session)
                        self.turns.append(session)
                        self.busy.add(job)
                        return job
                    if not any(session in w for w in self.waiters.values()):
                        self.turns.remove(session)
                free = [j for j in self.jobs if j not in self.busy]
                if free:  # waiters gone: the job is dropped at its boundary
                    self.busy.add(free[0])
                    return free[0]
                self.cond.wait(timeout=due)
            return None

    def _done(self, job: "_Job") -> None:
        with self.cond:
            self.busy.discard(job)
            self.cond.notify_all()

    def run(self) -> None:
        """Train jobs until close(), in this thread and trainers - 1 more."""
        others = [threading.Thread(target=self._train, name=f"train-service-{i + 2}", daemon=True)
                  for i in range(self.trainers - 1)]
        for t in others:
            t.start()
        self._train()
        for t in others:
            t.join(timeout=60)

    def _train(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                return
            try:
                self._turn(job)
            except Exception as e:  # the service must keep serving (and print no traceback); the notebooks train locally
                failed = {"local": f"the training service failed ({type(e).__name__}: {str(e)[:120]})"}
                for fut in job.futs:
                    if not fut.done():
                        fut.set_result(failed)
                with self.cond:
                    if job in self.jobs:
                        self.jobs.remove(job)
                    for key in job.keys:
                        self.inflight.pop(key, None)
                        self.waiters.pop(key, None)
            finally:
                self._done(job)

    def _turn(self, job: "_Job") -> None:
        """One epoch of a job (after the runs nobody waits for left it); its answers when it is done."""
        self._drop_abandoned(job)
        if not job.keys_left():
            self._finish(job, [])
            return
        start = time.monotonic()
        done = job.step()
        self._charge(job, time.monotonic() - start)
        if done:
            self._finish(job, job.answers())

    def _drop_abandoned(self, job: "_Job") -> None:
        with self.cond:
            gone = [i for i, k in enumerate(job.keys) if i not in job.dropped and not self.waiters.get(k)]
        for i in gone:
            job.drop(i)
            with self.cond:
                self.stats["abandoned"] += 1
                self.inflight.pop(job.keys[i], None)
                self.waiters.pop(job.keys[i], None)
            job.futs[i].set_result(ABANDONED)

    def _charge(self, job: "_Job", seconds: float) -> None:
        with self.cond:
            sessions = job.sessions()
        for session in sessions:
            charge = getattr(session, "charge", None)
            if charge is not None:
                charge(seconds / len(sessions))

    def _finish(self, job: "_Job", answers: list) -> None:
        keep = self.memo is not None
        with self.cond:
            if job in self.jobs:
                self.jobs.remove(job)
        for i, answer in enumerate(answers):
            if i in job.dropped:
                continue
            key, fut = job.keys[i], job.futs[i]
            failed = False
            if keep and isinstance(answer, TrainAnswer):
                try:
                    self.memo.put(key, answer)
                except OSError:
                    failed = True
            with self.cond:
                self.stats["trained"] += 1
                if failed:
                    self.stats["memo_write_failed"] += 1
                self.inflight.pop(key, None)
                self.waiters.pop(key, None)
            fut.set_result(answer)

    def train(self, reqs: list[TrainRequest]) -> list[TrainAnswer | dict]:
        """Train to the end in one go (the same numbers as in turns)."""
        job = _Job(self, [(str(i), r, Future()) for i, r in enumerate(reqs)])
        while not job.step():
            pass
        return job.answers()


class _Job:
    """One group trained together, an epoch per step. A run alone trains with the kit's own loop, bit
    for bit what the notebook computes with as many threads; a group trains with the batched trainer
    (the same within float32 rounding, which ten epochs can grow to a few 1e-3 in accuracy). Each run
    shuffles with its own copy of the notebook's generator."""

    def __init__(self, batcher: Batcher, group: list):
        self.batcher = batcher
        self.keys = [k for k, _, _ in group]
        self.reqs = [r for _, r, _ in group]
        self.futs = [f for _, _, f in group]
        self.dropped: set[int] = set()
        self.gens = []
        for r in self.reqs:
            g = torch.Generator()
            g.set_state(r.rng)
            self.gens.append(g)
        self.epoch = 0
        self.batch = None
        self.alone = None
        self.diverged: int | None = None

    def sessions(self) -> set:
        found = set()
        for i, k in enumerate(self.keys):
            if i not in self.dropped:
                found.update(s for s, n in self.batcher.waiters.get(k, {}).items() if n > 0)
        return found

    def keys_left(self) -> bool:
        return len(self.dropped) < len(self.keys)

    def drop(self, i: int) -> None:
        self.dropped.add(i)
        if self.batch is not None:
            self.batch.drop(i)

    def step(self) -> bool:
        """One more epoch; -> True when every run is done."""
        if len(self.reqs) == 1:
            return self._step_alone()
        if self.batch is None:
            s, epochs, hidden = self.reqs[0].group
            n = len(self.batcher.data.x_train)

            def orders(epoch):
                return [torch.randperm(n, generator=g) for g in self.gens]

            self.batch = EpochBatch(self.batcher.data, [RunSpec(r.lr, r.momentum, 0) for r in self.reqs], s, epochs,
                                    hidden_dim=hidden, init=[r.params for r in self.reqs], orders=orders,
                                    should_stop=lambda: self.batcher.closed, return_weights=True)
        self.batch.step()
        return self.batch.done

    def _step_alone(self) -> bool:
        from torch import nn

        from reference.kit import build_mlp, train_loop

        req, g, data = self.reqs[0], self.gens[0], self.batcher.data
        if self.alone is None:
            model = build_mlp(data.input_dim, data.output_dim, hidden_dim=req.hidden)
            params = list(model.parameters())
            with torch.no_grad():
                for p, w in zip(params, req.params):
                    p.copy_(w)
            opt = torch.optim.SGD(params, lr=req.lr, momentum=req.momentum)
            self.alone = (model, params, opt, {"acc": [], "test_acc": [], "loss": [], "test_loss": []})
        model, params, opt, H = self.alone
        one = train_loop(nn.CrossEntropyLoss(), model, *self.batcher.kit_data, opt, req.batch_size, 1,
                         data.device, generator=g, progress=False, should_stop=lambda: self.batcher.closed)
        for k in H:
            H[k] += one[k]
        self.epoch += 1
        if not all(math.isfinite(v) for v in (one["loss"][0], one["test_loss"][0])):
            self.diverged = self.epoch - 1
            return True
        return self.epoch >= req.epochs

    def answers(self) -> list[TrainAnswer | dict]:
        if self.alone is not None:
            if self.diverged is not None:
                return [_diverged(self.diverged)]
            model, params, opt, H = self.alone
            req = self.reqs[0]
            momenta = [opt.state[p]["momentum_buffer"] if req.momentum else torch.zeros_like(p) for p in params]
            return [TrainAnswer(H, tuple(p.detach().cpu() for p in params), tuple(m.cpu() for m in momenta),
                                self.gens[0].get_state())]
        results = self.batch.results()
        return [_diverged(res.diverged_epoch) if res.diverged else
                TrainAnswer(res.history, res.weights, res.momenta, g.get_state()) for res, g in zip(results, self.gens)]


def _diverged(epoch: int) -> dict:
    return {"local": f"the run diverged in epoch {epoch + 1}; it is trained in the notebook, as without the service",
            "diverged": True}

"""Turn training requests into answers: from the memo, by joining an identical request in flight,
or by training every waiting request of one group together with the reference's batched trainer.

One thread trains; requests wait on futures. A group (batch size, epochs, hidden width) is
trained as soon as every open session is waiting for an answer (no more requests can come)
or `gather_s` after its oldest request arrived, so concurrent notebooks share one pass.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from concurrent.futures import Future
from typing import Callable

import torch

from reference.trainer import Data, RunSpec, train_runs
from reference.trainrequest import TrainAnswer, TrainRequest


class Batcher:
    def __init__(self, data: Data, kit_data: tuple, memo, trainer_id: str, *, gather_s: float = 0.5,
                 max_runs: int = 16, all_waiting: Callable[[], bool] = lambda: False):
        self.data, self.kit_data, self.memo, self.trainer_id = data, kit_data, memo, trainer_id
        self.gather_s, self.max_runs, self.all_waiting = gather_s, max_runs, all_waiting
        self.cond = threading.Condition()
        self.pending: dict[str, tuple[TrainRequest, Future, float]] = {}
        self.inflight: dict[str, Future] = {}
        self.waiters: dict[str, int] = {}
        self.stats = collections.Counter()
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="train-service", daemon=True)
        self.thread.start()

    def submit(self, req: TrainRequest) -> tuple[Future, str, str]:
        """-> (future of a TrainAnswer or {"local": reason}, how it is served: memo, joined or trained, key)."""
        key = req.key(self.trainer_id)
        with self.cond:
            if key in self.inflight:
                return self._join(key), "joined", key
        stored = self.memo.get(key) if self.memo is not None else None
        if stored is not None:
            self.stats["memo"] += 1
            done: Future = Future()
            done.set_result(stored)
            return done, "memo", key
        with self.cond:
            if key in self.inflight:
                return self._join(key), "joined", key
            fut: Future = Future()
            self.inflight[key] = fut
            self.waiters[key] = 1
            self.pending[key] = (req, fut, time.monotonic())
            self.cond.notify_all()
        return fut, "trained", key

    def _join(self, key: str) -> Future:
        self.stats["joined"] += 1
        self.waiters[key] = self.waiters.get(key, 0) + 1
        return self.inflight[key]

    def release(self, key: str) -> None:
        """A waiter gave up (its notebook ended): a run nobody waits for any more is not trained."""
        with self.cond:
            if key not in self.waiters:
                return
            self.waiters[key] -= 1
            if self.waiters[key] == 0 and key in self.pending:
                _, fut, _ = self.pending.pop(key)
                del self.inflight[key], self.waiters[key]
                self.stats["abandoned"] += 1
                fut.set_result({"local": "abandoned"})

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
        self.thread.join(timeout=60)

    def _take_group(self) -> list[tuple[str, TrainRequest, Future]] | None:
        with self.cond:
            while not self.closed:
                if self.pending:
                    oldest = min(t for _, _, t in self.pending.values())
                    left = oldest + self.gather_s - time.monotonic()
                    if left <= 0 or self.all_waiting():
                        break
                    self.cond.wait(timeout=left)
                else:
                    self.cond.wait()
            if self.closed:
                return None
            first = min(self.pending.items(), key=lambda kv: kv[1][2])[1][0].group
            keys = [k for k, (r, _, _) in self.pending.items() if r.group == first][:self.max_runs]
            return [(k, *self.pending.pop(k)[:2]) for k in keys]

    def _loop(self) -> None:
        while True:
            group = self._take_group()
            if group is None:
                return
            keep = self.memo is not None
            try:
                answers = self.train([req for _, req, _ in group])
            except Exception as e:  # the service must keep serving; the notebooks train locally
                answers = [{"local": f"the training service failed ({type(e).__name__}: {str(e)[:120]})"}] * len(group)
                keep = False
            self.stats["batches"] += 1
            self.stats["trained"] += len(group)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(group))
            for (key, _, fut), answer in zip(group, answers):
                if keep:
                    try:
                        self.memo.put(key, answer)
                    except OSError:
                        self.stats["memo_write_failed"] += 1
                with self.cond:
                    self.inflight.pop(key, None)
                    self.waiters.pop(key, None)
                fut.set_result(answer)

    def train(self, reqs: list[TrainRequest]) -> list[TrainAnswer | dict]:
        """A run alone trains with the kit's own loop, bit for bit what the notebook computes with the
        same threads; a group trains together with the batched trainer (the same within float32
        rounding, which ten epochs can grow to a few 1e-3 in accuracy). Each run shuffles with its
        own copy of the notebook's generator."""
        gens = []
        for r in reqs:
            g = torch.Generator()
            g.set_state(r.rng)
            gens.append(g)
        if len(reqs) == 1:
            return [self._alone(reqs[0], gens[0])]
        s, epochs, hidden = reqs[0].group
        n = len(self.data.x_train)

        def orders(epoch):
            return [torch.randperm(n, generator=g) for g in gens]

        runs = [RunSpec(r.lr, r.momentum, 0) for r in reqs]
        results = train_runs(self.data, runs, s, epochs, hidden_dim=hidden, init=[r.params for r in reqs],
                             orders=orders, return_weights=True, should_stop=lambda: self.closed)
        return [_diverged(res.diverged_epoch) if res.diverged else
                TrainAnswer(res.history, res.weights, res.momenta, g.get_state()) for res, g in zip(results, gens)]

    def _alone(self, req: TrainRequest, g: torch.Generator) -> TrainAnswer | dict:
        from torch import nn

        from reference.kit import build_mlp, train_loop

        model = build_mlp(self.data.input_dim, self.data.output_dim, hidden_dim=req.hidden)
        params = list(model.parameters())
        with torch.no_grad():
            for p, w in zip(params, req.params):
                p.copy_(w)
        opt = torch.optim.SGD(params, lr=req.lr, momentum=req.momentum)
        H = train_loop(nn.CrossEntropyLoss(), model, *self.kit_data, opt, req.batch_size, req.epochs,
                       self.data.device, generator=g, progress=False, should_stop=lambda: self.closed)
        for epoch, values in enumerate(zip(H["loss"], H["test_loss"])):
            if not all(math.isfinite(v) for v in values):
                return _diverged(epoch)
        momenta = [opt.state[p]["momentum_buffer"] if req.momentum else torch.zeros_like(p) for p in params]
        return TrainAnswer(H, tuple(p.detach().cpu() for p in params), tuple(m.cpu() for m in momenta), g.get_state())


def _diverged(epoch: int) -> dict:
    return {"local": f"the run diverged in epoch {epoch + 1}; it is trained in the notebook, as without the service"}

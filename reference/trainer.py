"""Batched SGD trainer: many runs of the lab's MLP with one batch size, trained at once.

Each run is exactly what the lab kit trains after `torch.manual_seed(seed)`: the same initial
weights (nn.Linear's default init, drawn in build_mlp's order), the same shuffles (one randperm
per epoch from the same generator, continued after the init), SGD with momentum as
torch.optim.SGD does it, cross entropy averaged over the minibatch, the last partial minibatch
kept. The randomness lives in a per-run torch.Generator, so a run does not depend on which
other runs share its batch. Not bit for bit: the BLAS kernel a batched matmul takes (and its
order of summation) depends on the CPU's instruction set, the thread count and the batch shape,
so a run beside others agrees with the run alone within float32 rounding (last bits of the
weights; tests/test_trainer.py states the bound).

Speed: the weights of R runs are stacked ([R, ...]) and the forward and backward passes are
written out by hand as batched matmuls into preallocated buffers, about ten ops per step for
all R runs. Each layer's bias rides along as one extra input row (a ones column in the data,
a ones unit in the hidden layer), so a layer's weight gradient, momentum and update are one
op each, and all parameters of a run live in one flat tensor (one update op per step).

On CUDA the steps of a chunk are captured once as a CUDA graph and replayed (the first chunk of
each shape runs eagerly as the capture's warm-up): a step of a few small runs costs microseconds
of GPU time, far less than launching its ten ops from Python. Nothing waits for the GPU within
an epoch; losses and accuracies are read back once per epoch, when divergence is checked, and
the next epoch's shuffles are drawn on the CPU while the GPU still works.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from reference import memsize
from reference.memsize import CHUNK_ROWS, EVAL_ROWS


_threshold_backward = torch.ops.aten.threshold_backward.grad_input
# Torch keeps one graph-capture state per process for its CUDA generators: a replay while another
# thread captures fails ("Cannot prepare for replay during capturing stage", seen on an H100 with
# torch 2.11 and three sweep workers), so captures and replays take turns, process-wide.
_GRAPH_TURN = threading.Lock()


def data_shape(data: "Data") -> dict:
    """What the memory estimate needs of the data, as plain numbers (it crosses to the grader's process)."""
    return {"n": len(data.x_train), "n_test": len(data.x_test), "width": data.x_train.shape[1],
            "input_dim": data.input_dim, "classes": data.output_dim, "item": data.x_train.element_size(),
            "device": data.device.type}


def bytes_per_run(data: "Data | dict", batch_size: int, hidden: int) -> int:
    """reference.memsize.bytes_per_run of this data (or its data_shape)."""
    return memsize.bytes_per_run(data if isinstance(data, dict) else data_shape(data), batch_size, hidden)


class Stopped(Exception):
    """Training was asked to stop (Ctrl-C in the sweep); finished runs were already reported."""


@dataclass(frozen=True)
class RunSpec:
    lr: float
    momentum: float
    seed: int


@dataclass
class RunResult:
    """Per-epoch history as the kit's train returns it; a diverged run follows DESIGN.md."""

    diverged: bool
    diverged_epoch: int | None
    history: dict
    weights: tuple | None = field(default=None, repr=False)
    momenta: tuple | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Data:
    """Train and test sets on the training device, each image row ending in a 1 (the bias input)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_dim: int
    output_dim: int

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    @property
    def dtype(self) -> torch.dtype:
        return self.x_train.dtype


def _images(x, dtype) -> torch.Tensor:
    """uint8 pixels become float32 / 255 exactly as the kit's get_data does; floats pass through."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.dtype == torch.uint8:
        t = t.to(torch.float32).div_(255.0)
    return t.reshape(len(t), -1).to(dtype)


def _augmented(x: torch.Tensor, device) -> torch.Tensor:
    n, d = x.shape
    out = torch.empty(n, d + 1, dtype=x.dtype, device=device)
    out[:, :d] = x
    out[:, d] = 1
    return out


def prepare_data(x_train, y_train, x_test, y_test, *, output_dim: int = 10, device="cpu",
                 dtype: torch.dtype = torch.float32) -> Data:
    """Arrays from fmnist.load_arrays (uint8) or the kit's float tensors -> Data on device."""
    device = torch.device(device)
    xtr, xte = _images(x_train, dtype), _images(x_test, dtype)

    def labels(y):
        return torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).to(torch.int64).to(device)

    return Data(_augmented(xtr, device), labels(y_train), _augmented(xte, device), labels(y_test),
                input_dim=xtr.shape[1], output_dim=output_dim)


def resolve_dtype(name: str | torch.dtype) -> torch.dtype:
    return name if isinstance(name, torch.dtype) else {"float32": torch.float32, "float64": torch.float64}[name]


def init_generator(seed: int, input_dim: int, hidden_dim: int, output_dim: int):
    """-> (generator, (W1, b1, W2, b2)): what `torch.manual_seed(seed); build_mlp(...)` draws, in its order.

    The generator is returned after the draws, so its next randperm is the kit's first shuffle.
    """
    g = torch.Generator().manual_seed(int(seed))
    weights = []
    for fan_in, fan_out in ((input_dim, hidden_dim), (hidden_dim, output_dim)):
        w = torch.empty(fan_out, fan_in)
        torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        b = torch.nn.init.uniform_(torch.empty(fan_out), -bound, bound, generator=g)
        weights += [w, b]
    return g, tuple(weights)


class _Buffers:
    """Activations and gradients of one step size, allocated once and reused every step."""

    def __init__(self, r: int, s: int, hidden: int, classes: int, like: torch.Tensor):
        self.a = torch.ones(r, s, hidden + 1, dtype=like.dtype, device=like.device)
        self.a1 = self.a[:, :, :hidden]
        self.a_t = self.a.transpose(1, 2)
        self.g = torch.empty(r, s, classes, dtype=like.dtype, device=like.device)
        self.da = torch.empty(r, s, hidden, dtype=like.dtype, device=like.device)
        self.inv_s = 1.0 / s


class _Runs:
    """R runs' parameters and momentum buffers, each a flat [R, n_params] tensor with layer views.

    Layer 1 is stored input-major ([R, D+1, H], bias as the last row) because the small-batch
    forward matmul is fastest without a transposed operand; layer 2 likewise ([R, H+1, C]).
    """

    def __init__(self, weights: Sequence[tuple], lrs, momenta, device, dtype):
        w1 = weights[0][0]
        self.hidden, self.input_dim = w1.shape
        self.classes = weights[0][2].shape[0]
        d1, h1 = self.input_dim + 1, self.hidden + 1
        self.split = d1 * self.hidden
        r = len(weights)
        self.p = torch.empty(r, self.split + h1 * self.classes, dtype=dtype, device=device)
        for i, (w1, b1, w2, b2) in enumerate(weights):
            p1, p2 = self._views(self.p[i:i + 1])
            p1[0, :-1] = w1.detach().t()
            p1[0, -1] = b1.detach()
            p2[0, :-1] = w2.detach().t()
            p2[0, -1] = b2.detach()
        self.m = torch.zeros_like(self.p)
        self.lrs = [float(x) for x in lrs]
        self.momenta = [float(x) for x in momenta]
        self.use_graphs = False
        self.capture_stream = None
        self._refresh()

    def _views(self, flat):
        r = flat.shape[0]
        p1 = flat[:, :self.split].view(r, self.input_dim + 1, self.hidden)
        p2 = flat[:, self.split:].view(r, self.hidden + 1, self.classes)
        return p1, p2

    def _refresh(self):
        self.p1, self.p2 = self._views(self.p)
        self.m1, self.m2 = self._views(self.m)
        self.p2h_t = self.p2[:, :self.hidden, :].transpose(1, 2)
        self.neg_lr = torch.tensor(self.lrs, dtype=self.p.dtype, device=self.p.device).neg_().unsqueeze(1)
        same = len(set(self.momenta)) == 1
        self.beta = self.momenta[0] if same else 1.0
        self.mu = None if same else torch.tensor(self.momenta, dtype=self.p.dtype, device=self.p.device).unsqueeze(1)
        # Everything a captured graph reads or writes lives here, so it stays put between replays;
        # a change of the runs (keep) starts afresh.
        self.flat: dict[str, torch.Tensor] = {}
        self.step_buffers: dict[int, _Buffers] = {}
        self.graphs: dict[tuple, object] = {}

    def __len__(self):
        return self.p.shape[0]

    def keep(self, rows: list[int]) -> None:
        """Drop runs (diverged ones) so they stop updating and cost nothing."""
        idx = torch.tensor(rows, device=self.p.device)
        self.p, self.m = self.p.index_select(0, idx), self.m.index_select(0, idx)
        self.lrs = [self.lrs[i] for i in rows]
        self.momenta = [self.momenta[i] for i in rows]
        self._refresh()

    def weights(self, i: int) -> tuple:
        """Run i's (W1, b1, W2, b2) in nn.Linear's layout, on the CPU."""
        return self._unflatten(self.p1[i], self.p2[i])

    def buffers(self, i: int) -> tuple:
        """Run i's momentum buffers, laid out as weights() (torch.optim.SGD's momentum_buffer per parameter)."""
        return self._unflatten(self.m1[i], self.m2[i])

    @staticmethod
    def _unflatten(q1: torch.Tensor, q2: torch.Tensor) -> tuple:
        q1, q2 = q1.cpu(), q2.cpu()
        return q1[:-1].t().contiguous(), q1[-1].clone(), q2[:-1].t().contiguous(), q2[-1].clone()

    def scratch(self, name: str, numel: int) -> torch.Tensor:
        """A flat buffer of at least numel elements, reused from chunk to chunk and epoch to epoch."""
        t = self.flat.get(name)
        if t is None or t.numel() < numel:
            t = self.flat[name] = torch.empty(numel, dtype=self.p.dtype, device=self.p.device)
            self.graphs.clear()
        return t

    def buffers_for(self, size: int) -> _Buffers:
        if size not in self.step_buffers:
            self.step_buffers[size] = _Buffers(len(self), size, self.hidden, self.classes, self.p)
        return self.step_buffers[size]

    def steps(self, x: torch.Tensor, onehot: torch.Tensor, z: torch.Tensor, buf: _Buffers, key: tuple) -> None:
        """Every step of a chunk: x [R,K,S,D+1], onehot [R,K,S,C], logits into z [R,K,S,C].

        With graphs, a chunk shape (key) seen once runs eagerly on a side stream (the warm-up a
        capture needs); seen twice, its steps are captured and replayed from then on. A replay
        runs the very kernels of the eager steps on the same buffers.
        """
        def run():
            for xs, ohs, zs in zip(x.unbind(1), onehot.unbind(1), z.unbind(1)):
                self.step(xs, ohs, zs, buf)

        if not self.use_graphs:
            run()
            return
        graph = self.graphs.get(key)
        if graph is None or graph == "warm":
            # Warm-up and capture both run on a side stream. Capturing directly (not through
            # torch.cuda.graph, which synchronises the device and empties the cache first) lets
            # other workers' streams run on; "thread_local" forbids unsafe calls in this thread only.
            here = torch.cuda.current_stream(self.p.device)
            side = self.capture_stream or torch.cuda.Stream(self.p.device)
            side.wait_stream(here)
            with torch.cuda.stream(side):
                if graph is None:
                    run()
                    self.graphs[key] = "warm"
                else:
                    graph = torch.cuda.CUDAGraph()
                    with _GRAPH_TURN:
                        graph.capture_begin(capture_error_mode="thread_local")
                        try:
                            run()
                        finally:
                            graph.capture_end()
                    self.graphs[key] = graph
            here.wait_stream(side)
        if isinstance(graph, torch.cuda.CUDAGraph):
            with _GRAPH_TURN:
                graph.replay()

    def step(self, x: torch.Tensor, onehot: torch.Tensor, z: torch.Tensor, buf: _Buffers) -> None:
        """One SGD step of every run: x [R,S,D+1], onehot [R,S,C]; the logits land in z [R,S,C].

        torch.optim.SGD's update with zero-initialised momentum buffers: m = mu*m + grad
        (so the first step gives m = grad), p -= lr*m. The minibatch mean (1/S) is folded
        into the matmuls' alpha.
        """
        if self.mu is not None:
            self.m.mul_(self.mu)
        torch.bmm(x, self.p1, out=buf.a1)
        buf.a1.relu_()
        torch.bmm(buf.a, self.p2, out=z)
        torch.softmax(z, -1, out=buf.g)
        buf.g.sub_(onehot)
        torch.baddbmm(buf.da, buf.g, self.p2h_t, beta=0, alpha=buf.inv_s, out=buf.da)
        torch.baddbmm(self.m2, buf.a_t, buf.g, beta=self.beta, alpha=buf.inv_s, out=self.m2)
        _threshold_backward(buf.da, buf.a1, 0, grad_input=buf.da)
        torch.baddbmm(self.m1, x.transpose(1, 2), buf.da, beta=self.beta, out=self.m1)
        self.p.addcmul_(self.neg_lr, self.m)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (log-probability of the true class [R, N], correct count [R]) over a whole set, in fixed-size
        chunks, left on the device (totals() reads them back)."""
        r, n = len(self), len(x)
        rows = EVAL_ROWS.get(x.device.type, EVAL_ROWS["cuda"])
        logp_true = torch.empty(r, n, dtype=x.dtype, device=x.device)
        correct = torch.zeros(r, dtype=torch.int64, device=x.device)
        for i in range(0, n, rows):
            xb, yb = x[i:i + rows], y[i:i + rows]
            buf = _Buffers(r, len(xb), self.hidden, self.classes, self.p)
            torch.bmm(xb.expand(r, -1, -1), self.p1, out=buf.a1)
            buf.a1.relu_()
            z = torch.bmm(buf.a, self.p2)
            correct += _score(z, yb.expand(r, -1), logp_true[:, i:i + len(xb)])
        return logp_true, correct


def totals(logp_true: torch.Tensor, correct: torch.Tensor) -> tuple[list[float], list[int]]:
    """Summed cross entropy and correct count per run: the one read-back (host synchronisation) per set and epoch."""
    return _row_sums(logp_true), correct.tolist()


def _score(z: torch.Tensor, y: torch.Tensor, logp_true: torch.Tensor) -> torch.Tensor:
    """Log-probability of the true class into logp_true [R, m]; -> correct count per run (argmax as the kit)."""
    r = z.shape[0]
    logp = torch.log_softmax(z, -1)
    torch.gather(logp, -1, y.unsqueeze(-1), out=logp_true.view(*y.shape, 1))
    return (z.argmax(-1) == y).reshape(r, -1).sum(1)


def _row_sums(logp_true: torch.Tensor) -> list[float]:
    """Summed cross entropy per run, each run's row reduced alone (float64) so batch mates cannot change it."""
    return torch.stack([row.sum(dtype=torch.float64) for row in logp_true]).neg_().tolist()


def _chunk_samples(s: int, n: int, device: torch.device) -> int:
    rows = CHUNK_ROWS.get(device.type, CHUNK_ROWS["cuda"])
    return min(max(1, rows // s) * s, (n // s) * s)


def train_runs(data: Data, runs: Sequence[RunSpec], batch_size: int, epochs: int, *, hidden_dim: int = 512,
               init: Sequence[tuple] | None = None,
               orders: Callable[[int], Sequence[torch.Tensor]] | None = None,
               progress: Callable[[int], None] | None = None,
               should_stop: Callable[[], bool] | None = None,
               return_weights: bool = False, graphs: bool | None = None,
               capture_stream=None) -> list[RunResult]:
    """Train `runs` together with one batch size; -> one RunResult per run, in order.

    init: explicit (W1, b1, W2, b2) per run (nn.Linear layout) instead of the seed's.
    orders: orders(epoch) -> one index tensor [N] per run instead of the seed's randperm.
    progress(k): k more run-epochs are done. should_stop(): checked every chunk of steps;
    True raises Stopped. return_weights: each run also keeps its final weights and momentum
    buffers. graphs: replay each chunk's steps as a CUDA graph (default: on CUDA; no effect on
    a CPU). capture_stream: the CUDA stream for warm-ups and captures (default: a fresh one from
    torch's pool each time; threads side by side need their own, see sweep.train_all). A run whose train or test loss is non-finite after an epoch is
    marked diverged at that epoch and leaves the batch.
    """
    if not runs:
        return []
    batch = EpochBatch(data, runs, batch_size, epochs, hidden_dim=hidden_dim, init=init, orders=orders,
                       should_stop=should_stop, return_weights=return_weights, graphs=graphs,
                       capture_stream=capture_stream)
    while not batch.done:
        batch.step()
        if progress:
            progress(len(runs) * (batch.epoch - batch.reported))
            batch.reported = batch.epoch
    return batch.results()


class EpochBatch:
    """train_runs one epoch at a time, so a caller can interleave batches or let runs leave between
    epochs (`drop`); stepping it to the end gives exactly train_runs' numbers.

    The next epoch's orders are drawn on the CPU while the device still works on this one."""

    def __init__(self, data: Data, runs: Sequence[RunSpec], batch_size: int, epochs: int, *, hidden_dim: int = 512,
                 init: Sequence[tuple] | None = None,
                 orders: Callable[[int], Sequence[torch.Tensor]] | None = None,
                 should_stop: Callable[[], bool] | None = None, return_weights: bool = False,
                 graphs: bool | None = None, capture_stream=None):
        self.data, self.s, self.epochs, self.n = data, int(batch_size), epochs, len(data.x_train)
        self.orders, self.should_stop, self.return_weights = orders, should_stop, return_weights
        self.gens, drawn = zip(*(init_generator(r.seed, data.input_dim, hidden_dim, data.output_dim) for r in runs))
        weights = list(init) if init is not None else list(drawn)
        self.state = _Runs(weights, [r.lr for r in runs], [r.momentum for r in runs], data.device, data.dtype)
        self.state.use_graphs = data.device.type == "cuda" and (graphs is None or graphs)
        self.state.capture_stream = capture_stream
        self.alive = list(range(len(runs)))
        self.dropped: set[int] = set()
        self.out = [RunResult(False, None, {"acc": [], "test_acc": [], "loss": [], "test_loss": []}) for _ in runs]
        self.epoch = self.reported = 0
        self.perms: torch.Tensor | None = None

    @property
    def done(self) -> bool:
        return self.epoch >= self.epochs or not self.alive

    def _shuffles(self, epoch: int) -> torch.Tensor:
        """The epoch's order of every run still alive, drawn on the CPU (the kit's generator semantics)."""
        if self.orders is not None:
            chosen = self.orders(epoch)
            return torch.stack([torch.as_tensor(chosen[i]) for i in self.alive])
        return torch.stack([torch.randperm(self.n, generator=self.gens[i]) for i in self.alive])

    def step(self) -> None:
        """One epoch of every run still in the batch."""
        data, n, epoch = self.data, self.n, self.epoch
        with torch.no_grad():
            perms = self.perms if self.perms is not None else self._shuffles(epoch)
            trained = _epoch(self.state, data, perms.to(data.device), self.s, self.should_stop)
            tested = self.state.evaluate(data.x_test, data.y_test)
            self.perms = self._shuffles(epoch + 1) if epoch + 1 < self.epochs else None
            (loss, correct), (test_loss, test_correct) = totals(*trained), totals(*tested)
        keep = []
        for row, i in enumerate(self.alive):
            h = self.out[i].history
            if math.isfinite(loss[row]) and math.isfinite(test_loss[row]):
                h["loss"].append(loss[row] / n)
                h["acc"].append(correct[row] / n)
                h["test_loss"].append(test_loss[row] / len(data.x_test))
                h["test_acc"].append(test_correct[row] / len(data.x_test))
                keep.append(row)
            else:
                self.out[i].diverged, self.out[i].diverged_epoch = True, epoch
                if self.return_weights:
                    self.out[i].weights, self.out[i].momenta = self.state.weights(row), self.state.buffers(row)
        self._keep(keep)
        self.epoch = epoch + 1 if self.alive else self.epochs

    def drop(self, i: int) -> None:
        """Run i leaves the batch before the next epoch (nobody wants its result any more)."""
        if i in self.alive:
            self.dropped.add(i)
            self._keep([row for row, j in enumerate(self.alive) if j != i])

    def _keep(self, rows: list[int]) -> None:
        if len(rows) < len(self.alive):
            if rows:
                self.state.keep(rows)
                if self.perms is not None:
                    self.perms = self.perms[rows]
            self.alive = [self.alive[row] for row in rows]

    def results(self) -> list[RunResult]:
        """One RunResult per run (a dropped run's history stops where it left)."""
        chance = 1.0 / self.data.output_dim
        for i, res in enumerate(self.out):
            h = res.history
            while i not in self.dropped and len(h["acc"]) < self.epochs:
                h["acc"].append(chance)
                h["test_acc"].append(chance)
                h["loss"].append(None)
                h["test_loss"].append(None)
        if self.return_weights:
            for row, i in enumerate(self.alive):
                self.out[i].weights, self.out[i].momenta = self.state.weights(row), self.state.buffers(row)
        return self.out


def _epoch(state: _Runs, data: Data, perms: torch.Tensor, s: int, should_stop) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass over the training set in each run's order; -> (log-probability of each sample's true
    class [R, N], correct count [R]), left on the device.

    The logits of every step are kept for the chunk and scored once per chunk (the loss and
    accuracy of each minibatch as it was trained, at a fraction of the per-step cost).
    """
    r, n = perms.shape
    dev, dt, c = data.device, data.dtype, data.output_dim
    labels = data.y_train[perms]
    logp_true = torch.empty(r, n, dtype=dt, device=dev)
    correct = torch.zeros(r, dtype=torch.int64, device=dev)
    full = (n // s) * s
    chunk = _chunk_samples(s, n, dev)
    pieces = [(i, min(chunk, full - i), s) for i in range(0, full, chunk)] if full else []
    if n > full:
        pieces.append((full, n - full, n - full))
    width = data.x_train.shape[1]
    rows = r * max(m for _, m, _ in pieces)
    xbuf, zbuf = state.scratch("x", rows * width), state.scratch("z", rows * c)
    ohbuf = state.scratch("onehot", rows * c)
    for start, m, size in pieces:
        if should_stop is not None and should_stop():
            raise Stopped()
        steps = m // size
        idx = perms[:, start:start + m]
        x = torch.index_select(data.x_train, 0, idx.reshape(-1), out=xbuf[:r * m * width].view(r * m, width))
        x = x.view(r, steps, size, width)
        y = labels[:, start:start + m].reshape(r, steps, size)
        onehot = ohbuf[:r * m * c].view(r, steps, size, c).zero_().scatter_(3, y.unsqueeze(-1), 1.0)
        z = zbuf[:r * m * c].view(r, steps, size, c)
        state.steps(x, onehot, z, state.buffers_for(size), (m, size))
        correct += _score(z, y, logp_true[:, start:start + m])
    return logp_true, correct

"""The training service's one request, "train the lab's MLP", and its answer: built by the kit, checked by the service.

A request names a standard training call completely: the MLP's initial weights, lr and
momentum of plain SGD, batch size, epochs, the fingerprint of the data, and the state of
the generator the kit shuffles with. Whatever arrives is checked field by field; a request
that passes can be trained and memoized with no further doubt about its shapes or values.

Its tensors are torch tensors (the kit, the service's process) or numpy arrays (the grader's side,
which never imports torch); only the generator state's validity needs torch, so the grader leaves
that check to the service's process, which parses every request again.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np

VERSION = 1
MAX_HIDDEN = 4096
MAX_BATCH = 1 << 20
RNG_BYTES = 5056
PARAMS = ("w1", "b1", "w2", "b2")
FIELDS = {"op", "version", "data", "lr", "momentum", "batch_size", "epochs"}
MAX_PAYLOAD = 4 * (MAX_HIDDEN * 785 + MAX_HIDDEN * 11 + 16) + RNG_BYTES
INIT_ROW_MIN = 16  # a unit's incoming weights, long enough to tell random from copied
# two random rows of d values have |cos| about 1/sqrt(d) (0.036 for 784); 7 of those is past any pair of
# 512 units (p < 1e-6) and far below a copied or sorted row's 0.9 and more
INIT_COSINE_SIGMAS = 7.0


class RequestError(Exception):
    """The request cannot be served; the message is the one-line reason the notebook sees."""


@dataclass(frozen=True)
class TrainRequest:
    data: str
    lr: float
    momentum: float
    batch_size: int
    epochs: int
    params: tuple
    rng: object

    @property
    def hidden(self) -> int:
        return self.params[0].shape[0]

    @property
    def group(self) -> tuple:
        """Requests with the same group train together in one batch of the batched trainer."""
        return self.batch_size, self.epochs, self.hidden

    def key(self, trainer: str) -> str:
        """Memo key: everything that decides the result, and the trainer (device, versions) that computed it."""
        h = hashlib.sha256()
        scalars = {"data": self.data, "lr": self.lr, "momentum": self.momentum, "batch_size": self.batch_size,
                   "epochs": self.epochs, "trainer": trainer, "version": VERSION}
        h.update(json.dumps(scalars, sort_keys=True).encode())
        _hash_arrays(h, (*self.params, self.rng))
        return h.hexdigest()

    def as_torch(self) -> "TrainRequest":
        """The same request with torch tensors (what the trainer needs), its generator state checked now;
        self when it has them already. RequestError when the state is not one torch accepts."""
        if not isinstance(self.rng, np.ndarray):
            return self
        import torch

        rng = torch.from_numpy(self.rng)
        _check_rng(rng)
        return TrainRequest(self.data, self.lr, self.momentum, self.batch_size, self.epochs,
                            tuple(torch.from_numpy(p) for p in self.params), rng)


def _check_rng(rng) -> None:
    import torch

    try:
        torch.Generator().set_state(rng)
    except (RuntimeError, ValueError, TypeError) as e:
        raise RequestError(f"malformed request: rng is not a valid generator state ({str(e).splitlines()[0][:80]})") from None


def _array(t) -> np.ndarray:
    """A torch tensor's or numpy array's values as a C-contiguous numpy array (no copy where it is one)."""
    return np.ascontiguousarray(t if isinstance(t, np.ndarray) else t.detach().cpu().numpy())


def _dtype(t) -> str:
    return str(t.dtype).replace("torch.", "")


def build(*, data: str, lr: float, momentum: float, batch_size: int, epochs: int,
          params, rng) -> tuple[dict, dict]:
    """-> (header, tensors) for reference.wire.encode; params and rng as torch tensors or numpy arrays."""
    header = {"op": "train", "version": VERSION, "data": data, "lr": float(lr), "momentum": float(momentum),
              "batch_size": int(batch_size), "epochs": int(epochs)}
    tensors = {name: _array(p).astype(np.float32, copy=False) for name, p in zip(PARAMS, params)}
    tensors["rng"] = rng
    return header, tensors


def params_digest(params) -> str:
    """The starting weights' fingerprint: a class seeded alike sends the same weights for many runs."""
    h = hashlib.sha256()
    _hash_arrays(h, params)
    return h.hexdigest()


def _hash_arrays(h, arrays) -> None:
    for t in arrays:
        h.update(str(tuple(t.shape)).encode())
        h.update(_array(t).tobytes())


def default_init(params) -> bool:
    """Whether (w1, b1, w2, b2) could be PyTorch's default nn.Linear initialisation, as the lab's build_mlp
    makes it: every value within 1/sqrt(fan_in), spread evenly over that range, and no two units' incoming
    weights alike. A run from other weights (1e18 everywhere, one unit copied 512 times) is still trained,
    but its history is not evidence of what the lab's model does (grader/assessment/evidence.py)."""
    layers = [(np.asarray(params[i], dtype=np.float64), np.asarray(params[i + 1], dtype=np.float64)) for i in (0, 2)]
    for w, b in layers:
        bound = (1 + 1e-6) / math.sqrt(w.shape[1])
        if np.abs(w).max(initial=0.0) > bound or np.abs(b).max(initial=0.0) > bound or not _even(w.ravel(), bound):
            return False
        if w.shape[0] >= 2 and w.shape[1] >= INIT_ROW_MIN and _max_cosine(w) > INIT_COSINE_SIGMAS / math.sqrt(w.shape[1]):
            return False
    return True


def _max_cosine(w) -> float:
    """The largest |cos| between two rows, on one BLAS thread: the grader checks while notebooks run, and
    BLAS's other threads would spin on a core for about 0.1 s after each check (benchmarks/RESULTS.md)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        unit = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-30)
        cos = unit @ unit.T
    np.fill_diagonal(cos, 0.0)
    return float(np.abs(cos).max())


def _even(x, bound: float) -> bool:
    """Counts in ten equal bins of [-bound, bound] within six standard deviations of a uniform draw's."""
    n = x.size
    counts = np.histogram(x, bins=10, range=(-bound, bound))[0]
    return bool((np.abs(counts - n / 10) <= 6 * math.sqrt(n * 0.09) + 1).all())


def parse(header: dict, tensors: dict, *, input_dim: int, classes: int) -> TrainRequest:
    """Check a decoded frame; -> TrainRequest, or RequestError naming the first problem.

    It runs none of torch's parallel kernels (numpy checks the values): the service's process parses in its
    reader thread, and one parallel op from a second thread makes OpenMP stop spinning between the trainer's
    ops (throttled waits), so the main thread then trains about 25% slower (benchmarks/RESULTS.md)."""
    if header.get("op") != "train":
        raise RequestError(f"unknown operation {str(header.get('op'))[:40]!r}; the service only trains")
    if header.get("version") != VERSION:
        raise RequestError(f"protocol version {str(header.get('version'))[:20]} is not {VERSION}; reinstall the lab kit")
    extra, missing = set(header) - FIELDS, FIELDS - set(header)
    if extra or missing:
        what = f"unknown field {sorted(extra)[0]!r}" if extra else f"missing field {sorted(missing)[0]!r}"
        raise RequestError(f"malformed request: {what}")
    data = header["data"]
    if not isinstance(data, str) or not 8 <= len(data) <= 128:
        raise RequestError("malformed request: data must be the data set's fingerprint string")
    lr = _number(header, "lr", 0.0, 1e6)
    momentum = _number(header, "momentum", 0.0, 1e3)
    batch_size = _integer(header, "batch_size", 1, MAX_BATCH)
    epochs = _integer(header, "epochs", 1, 1 << 20)
    if set(tensors) != {*PARAMS, "rng"}:
        raise RequestError(f"malformed request: tensors must be exactly {', '.join(PARAMS)} and rng")
    w1, b1, w2, b2 = (tensors[n] for n in PARAMS)
    if w1.ndim != 2 or _dtype(w1) != "float32":
        raise RequestError("malformed request: w1 must be a float32 matrix")
    hidden = w1.shape[0]
    if not 1 <= hidden <= MAX_HIDDEN:
        raise RequestError(f"the hidden layer has {hidden} units; the service trains 1 to {MAX_HIDDEN}")
    expected = {"w1": (hidden, input_dim), "b1": (hidden,), "w2": (classes, hidden), "b2": (classes,)}
    for name, shape in expected.items():
        t = tensors[name]
        if _dtype(t) != "float32" or tuple(t.shape) != shape:
            raise RequestError(f"malformed request: {name} must be float32 of shape {list(shape)}, "
                               f"got {_dtype(t)} {list(t.shape)}")
        if not bool(np.isfinite(_array(t)).all()):
            raise RequestError(f"malformed request: {name} holds non-finite values")
    rng = tensors["rng"]
    if _dtype(rng) != "uint8" or tuple(rng.shape) != (RNG_BYTES,):
        raise RequestError(f"malformed request: rng must be the {RNG_BYTES} bytes of torch.get_rng_state()")
    if not isinstance(rng, np.ndarray):
        _check_rng(rng)
    return TrainRequest(data, lr, momentum, batch_size, epochs, (w1, b1, w2, b2), rng)


def _number(header: dict, name: str, low: float, high: float) -> float:
    v = header[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not low <= v <= high:
        raise RequestError(f"malformed request: {name} must be a finite number from {low:g} to {high:g}, got {str(v)[:40]}")
    return float(v)


def _integer(header: dict, name: str, low: int, high: int) -> int:
    v = header[name]
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise RequestError(f"malformed request: {name} must be an integer from {low} to {high}, got {str(v)[:40]}")
    return v


@dataclass(frozen=True)
class TrainAnswer:
    """What a local training would have left behind: history, final weights, momentum buffers, generator state."""

    history: dict
    params: tuple
    momenta: tuple
    rng: object

    def frame(self, **extra) -> tuple[dict, dict]:
        tensors = {**dict(zip(PARAMS, self.params)), **{f"m_{n}": m for n, m in zip(PARAMS, self.momenta)}, "rng": self.rng}
        return {"ok": True, "history": self.history, **extra}, tensors

    @classmethod
    def from_frame(cls, header: dict, tensors: dict) -> "TrainAnswer":
        history = header.get("history")
        names = {*PARAMS, *(f"m_{n}" for n in PARAMS), "rng"}
        if not isinstance(history, dict) or set(tensors) != names:
            raise RequestError("the training service's answer is incomplete")
        return cls(history, tuple(tensors[n] for n in PARAMS), tuple(tensors[f"m_{n}"] for n in PARAMS), tensors["rng"])


def answer_payload(hidden: int, input_dim: int, classes: int) -> int:
    """Bytes of an answer's tensors: parameters twice (weights, momenta) and the generator state."""
    return 2 * 4 * (hidden * (input_dim + 1) + classes * (hidden + 1)) + RNG_BYTES

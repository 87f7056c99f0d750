"""What trains: the data on the training device, the memo and the batcher, in whichever process trains.

The grader starts it in the service's own process (grader/service/worker.py); tests of the
batcher's scheduling start it in their own process to look inside.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from grader.common.errors import UserError


@dataclass(frozen=True)
class ServiceOptions:
    """How the grader's training service runs; picklable, so a Dask worker can start its own.
    process=False trains in the grader's own process (the scheduling tests look inside the batcher).
    threads: torch threads of each trainer; trainers: jobs of different sessions that train at once on the
    CPU, each in a thread of its own (grader.execution.limits.service_trainers)."""

    cache_dir: str | None = None
    device: str = "auto"
    threads: int | None = None
    trainers: int = 1
    gather_s: float = 0.5
    max_batch_runs: int = 16
    process: bool = True
    data_cache: str | None = None


@dataclass
class Engine:
    batcher: object
    memo_dir: str
    device: str
    threads: int
    trainers: int
    fingerprint: str
    data_kind: str
    data_from: str
    input_dim: int
    classes: int
    shape: dict

    def hello(self) -> dict:
        """What the sessions' side needs to know of the engine, as plain data."""
        return {"memo_dir": self.memo_dir, "device": self.device, "threads": self.threads, "trainers": self.trainers,
                "fingerprint": self.fingerprint, "data_kind": self.data_kind, "data_from": self.data_from,
                "input_dim": self.input_dim, "classes": self.classes, "shape": self.shape}


def open_engine(options, data_dir, *, all_waiting=lambda: False, thread: bool = True, log=lambda line: None) -> Engine:
    """Load the data onto the training device, open the memo, make the batcher (training in its own
    thread, or, thread=False, in whoever calls batcher.run())."""
    import torch

    from grader.service.batcher import Batcher
    from grader.service.memo import Memo, default_dir
    from reference.trainer import prepare_data

    device = pick_device(options.device, torch)
    (xtr, ytr, xte, yte), fingerprint, kind, data_from = load_data(options, data_dir)
    data = prepare_data(xtr, ytr, xte, yte, output_dim=10, device=device)
    threads = options.threads or os.cpu_count() or 1
    trainers = max(1, int(options.trainers)) if device.type == "cpu" else 1
    if device.type == "cpu":
        torch.set_num_threads(threads)
    memo = Memo(options.cache_dir or default_dir(), input_dim=data.input_dim, classes=data.output_dim)
    batcher = Batcher(data, (xtr, ytr, xte, yte), memo, trainer_name(torch, device, data.dtype, threads),
                      gather_s=options.gather_s, max_runs=options.max_batch_runs, all_waiting=all_waiting,
                      thread=thread, log=log, trainers=trainers)
    return Engine(batcher, str(memo.root), str(device), threads, trainers, fingerprint, kind, data_from,
                  data.input_dim, data.output_dim, batcher.shape)


def load_data(options: ServiceOptions, data_dir) -> tuple[tuple, str, str, str]:
    """-> (the kit's four tensors, the data's fingerprint, its kind, where they came from): mapped from the
    decoded cache the grader verified before it started the service (no decoding, one copy in the page cache
    for every process), or decoded from the gzip files when there is none or it does not open."""
    import torch

    from reference import datacache, fmnist
    from reference.kit import as_tensors

    opened = datacache.open_mapped(options.data_cache) if options.data_cache else None
    if opened is not None:
        arrays, manifest = opened
        t = {name: torch.from_numpy(a) for name, a in arrays.items()}
        return ((t["x_train"], t["y_train"], t["x_test"], t["y_test"]), manifest["fingerprint"], manifest["kind"],
                "decoded cache")
    x_train, y_train, x_test, y_test, info = fmnist.load_arrays(data_dir, download=False)
    (xtr, ytr), (xte, yte) = as_tensors(x_train, y_train, x_test, y_test)
    return (xtr, ytr, xte, yte), fmnist.fingerprint(x_train, y_train, x_test, y_test), info.kind, "gzip files"


def warm_up(engine: Engine) -> None:
    """Train a few steps on a slice of the data, so that the first notebook's run does not pay for torch.optim's
    first use (about 1.3 s: its lazy imports) and the first kernels' set-up."""
    import torch
    from torch import nn

    from reference.kit import build_mlp, train_loop

    x, y, xt, yt = (t[:256] for t in engine.batcher.kit_data)
    model = build_mlp(engine.input_dim, engine.classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    train_loop(nn.CrossEntropyLoss(), model, x, y, xt, yt, opt, 128, 1, torch.device(engine.device),
               generator=torch.Generator().manual_seed(0), progress=False)


def trainer_name(torch, device, dtype, threads: int) -> str:
    """What computed a run, for the memo key: torch version, device, dtype, threads, and the kernels it
    took (the CPU and its kernel path; the GPU's name on CUDA), so that a memo shared across machines
    (a Dask cluster, a copied cache) answers only with numbers this machine would compute."""
    from grader.common.kernels import cpu_kernel_path

    where = cpu_kernel_path(torch) if device.type == "cpu" else torch.cuda.get_device_name(device)
    return f"torch-{torch.__version__}/{device.type}/{dtype}/threads-{threads}/{where}".replace("torch.", "")


def pick_device(name: str, torch):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available to the training service")
    return torch.device(name)

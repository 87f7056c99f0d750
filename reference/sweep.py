"""`labgrader reference run`: every (config, seed) of the spec's sweeps, batched, resumable.

Runs with the same batch size and momentum train together (trainer.train_runs); each finished
run goes to the run store at once, so an interrupted sweep resumes with only what is missing.
A run's numbers depend on its own seed only, never on which runs shared its batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import queue
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm import tqdm

from grader import __version__
from grader.common.errors import UserError
from reference import fmnist, trainer
from reference.artifact import build_artifact, write_artifact
from reference.runstore import RunStore, store_path
from reference.spec import Config, Spec, load_spec

# Per-run cost model for scheduling (longest first): a fixed cost per SGD step plus FLOPs.
STEP_OVERHEAD_S = 1.5e-4
CPU_FLOPS = 1.5e11
# Threads (each with its own CUDA stream) that train a sweep's chunks on one GPU. One is what was
# measured and tested on an H100 (full grid 7.4-7.5 s); two ran it in 6.1 s, before the capture-stream
# fix for three (benchmarks/RESULTS.md), which no GPU has run yet.
CUDA_WORKERS = 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device cuda: no CUDA device is available to torch {torch.__version__}; "
                        "use --device cpu (or auto)")
    return torch.device(name)


def device_name(device: torch.device, workers: int) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine() or 'cpu'}, {workers} worker thread{'s' if workers != 1 else ''}"


def choose_seeds(spec: Spec, n: int | None) -> list[int]:
    """The first n of the spec's seeds, or 0..n-1 when n exceeds them."""
    if n is None:
        return list(spec.seeds)
    if n < 1:
        raise UserError(f"--seeds {n}: need at least one seed")
    return list(spec.seeds[:n]) if n <= len(spec.seeds) else list(range(n))


def cpu_workers() -> int:
    return max(1, torch.get_num_threads())


def runs_per_chunk(device: torch.device, data: trainer.Data, batch_size: int, hidden: int) -> int:
    """How many runs train in one batch.

    CPU: one. Measured on a 2-core Xeon, a run's weights and momentum (3.2 MB) stay nearest the
    core, and cores training separate runs never wait on each other, so one run per core beats
    stacking (R=2 or 3 per core: 5-10% slower per run at S=16, no gain at S=128).
    CUDA: as many as fit in half the free memory (at most 256).
    """
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(256, int(free // 2 // trainer.bytes_per_run(data, batch_size, hidden))))


def run_cost(config: Config, n: int, epochs: int, input_dim: int, hidden: int, classes: int) -> float:
    steps = -(-n // config.batch_size) * epochs
    flops = 6 * (input_dim * hidden + hidden * classes) * n * epochs
    return steps * STEP_OVERHEAD_S + flops / CPU_FLOPS


def plan_chunks(jobs: Sequence[tuple[Config, int]], per_chunk: Callable[[int], int], cost: Callable[[Config], float],
                by_momentum: bool = True):
    """Group jobs by (batch size, momentum), or by batch size alone (a GPU: all runs of a batch size in
    one batched product, each with its own momentum), split groups into chunks, most expensive first."""
    groups: dict[tuple, list] = {}
    for config, seed in jobs:
        groups.setdefault((config.batch_size, config.momentum if by_momentum else None), []).append((config, seed))
    chunks = []
    for (bs, _), members in groups.items():
        size = max(1, per_chunk(bs))
        chunks += [members[i:i + size] for i in range(0, len(members), size)]
    chunks.sort(key=lambda ch: -sum(cost(c) for c, _ in ch))
    return chunks


def train_all(data: trainer.Data, jobs: Sequence[tuple[Config, int]], *, epochs: int, hidden: int,
              on_run: Callable[[Config, int, trainer.RunResult, float], None],
              progress: Callable[[int], None] | None = None, workers: int | None = None,
              graphs: bool | None = None) -> None:
    """Train every (config, seed); on_run(config, seed, result, seconds) as each run finishes.

    On a CPU, `workers` threads (default: torch's thread count) each train their own chunks
    with single-threaded ops: small per-step ops on a shared OpenMP pool spend more time in
    barriers than in math, worst when other processes share the cores. Torch's thread count is
    restored afterwards. Worker threads also flush denormal floats to zero (their own FPU
    state only): confident softmax outputs and decaying momentum go denormal, and x86 then
    runs a small-batch step ~6x slower; only values below ~1e-38 change.
    On CUDA, all runs of a batch size train as one batch, and `workers` threads (default
    CUDA_WORKERS) each drive their own CUDA stream, so the small-batch chunks, whose steps are
    too small to fill the GPU, run beside the others. graphs: see trainer.train_runs.
    Ctrl-C stops the workers within a chunk of steps; finished runs are kept.
    """
    device = data.device
    n = len(data.x_train)
    cuda = device.type == "cuda"
    chunks = plan_chunks(jobs, lambda bs: runs_per_chunk(device, data, bs, hidden),
                         lambda c: run_cost(c, n, epochs, data.input_dim, hidden, data.output_dim), by_momentum=not cuda)
    if not chunks:
        return
    count = (workers or CUDA_WORKERS) if cuda else (workers or cpu_workers())
    count = min(count, len(chunks))
    todo: queue.Queue = queue.Queue()
    for ch in chunks:
        todo.put(ch)
    stop = threading.Event()
    errors: list[BaseException] = []
    lock = threading.Lock()
    threads_before = torch.get_num_threads()

    def tick(k: int) -> None:
        if progress:
            with lock:
                progress(k)

    def work() -> None:
        try:
            stream, capture = contextlib.nullcontext(), None
            if cuda:
                side = torch.cuda.Stream(device)
                side.wait_stream(torch.cuda.current_stream(device))  # the data were uploaded on the default stream
                stream = torch.cuda.stream(side)
                if count > 1:
                    # Torch hands out streams round-robin from a small pool: fresh ones drawn while
                    # other workers run can be another worker's stream, mid-capture (seen on an H100:
                    # "Cannot copy between CPU and CUDA tensors during CUDA graph capture", 3 workers).
                    capture = torch.cuda.Stream(device)
            else:
                torch.set_num_threads(1)
                torch.set_flush_denormal(True)
            with stream:
                train_chunks(capture)
        except trainer.Stopped:
            return
        except BaseException as e:  # handed to the main thread, which re-raises it
            errors.append(e)
            stop.set()

    def train_chunks(capture) -> None:
        while not stop.is_set():
            try:
                chunk = todo.get_nowait()
            except queue.Empty:
                return
            start = time.perf_counter()
            specs = [trainer.RunSpec(c.lr, c.momentum, seed) for c, seed in chunk]
            results = trainer.train_runs(data, specs, chunk[0][0].batch_size, epochs, hidden_dim=hidden,
                                         progress=tick, should_stop=stop.is_set, graphs=graphs,
                                         capture_stream=capture)
            seconds = (time.perf_counter() - start) / len(chunk)
            with lock:
                for (c, seed), res in zip(chunk, results):
                    on_run(c, seed, res, seconds)

    threads = [threading.Thread(target=work, name=f"sweep-{i}", daemon=True) for i in range(count)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join()
        raise
    finally:
        stop.set()
        torch.set_num_threads(threads_before)
    if errors:
        raise errors[0]


def _command_line(args, seeds: list[int], epochs: int) -> str:
    parts = ["labgrader", "reference", "run"]
    if args.spec:
        parts += ["--spec", str(args.spec)]
    if args.data_dir:
        parts += ["--data-dir", str(args.data_dir)]
    parts += ["--device", args.device, "--seeds", str(len(seeds)), "--epochs", str(epochs), "--out", str(args.out)]
    return " ".join(parts + (["--fresh"] if args.fresh else []))


def _record(config: Config, seed: int, res: trainer.RunResult, seconds: float) -> dict:
    return {"config": config.as_dict(), "seed": seed, "diverged": res.diverged,
            "diverged_epoch": res.diverged_epoch, "history": res.history, "train_s": round(seconds, 3)}


def run_command(args) -> int:
    started = time.perf_counter()
    spec = load_spec(args.spec)
    seeds = choose_seeds(spec, args.seeds)
    epochs = spec.epochs if args.epochs is None else args.epochs
    if epochs < 1:
        raise UserError(f"--epochs {epochs}: need at least one epoch")
    device = resolve_device(args.device)
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder; give the artifact's file name, e.g. {out / 'reference.json'}")
    x_train, y_train, x_test, y_test, info = fmnist.load_arrays(args.data_dir, download=True)
    if x_train.shape[1] != spec.input_dim:
        raise UserError(f"the data has {x_train.shape[1]} pixels per image but spec model.input_dim is {spec.input_dim}")
    if max(int(y_train.max()), int(y_test.max())) >= spec.output_dim:
        raise UserError(f"the data has labels up to {max(int(y_train.max()), int(y_test.max()))} "
                        f"but spec model.output_dim is {spec.output_dim}")
    workers = CUDA_WORKERS if device.type == "cuda" else cpu_workers()
    binding = {"spec_sha256": spec.sha256, "seeds": seeds, "epochs": epochs, "dtype": spec.dtype,
               "device": device.type, "data_kind": info.kind,
               "data_sha256": hashlib.sha256(json.dumps(info.sha256, sort_keys=True).encode()).hexdigest()}
    store = RunStore.open(store_path(out), binding, epochs, fresh=args.fresh)
    if store.dropped:
        print(f"labgrader: dropped {store.dropped} unreadable line(s) from {store.path} "
              "(a run cut short by an interruption); those runs train again", file=sys.stderr)
    jobs = [(c, s) for c in spec.configs() for s in seeds]
    missing = [(c, s) for c, s in jobs if not store.has(c.as_dict(), s)]
    if missing:
        data = trainer.prepare_data(x_train, y_train, x_test, y_test, output_dim=spec.output_dim,
                                    device=device, dtype=trainer.resolve_dtype(spec.dtype))
        del x_train, x_test
        bar = tqdm(total=len(missing) * epochs, unit="run-epoch", file=sys.stderr, dynamic_ncols=True,
                   mininterval=0.5, desc=f"reference {device.type} {info.kind}")
        done = [0]

        def on_run(config, seed, res, seconds):
            store.append(_record(config, seed, res, seconds))
            done[0] += 1
            bar.set_postfix_str(f"runs {done[0]}/{len(missing)}", refresh=False)

        try:
            train_all(data, missing, epochs=epochs, hidden=spec.hidden_dim, on_run=on_run,
                      progress=bar.update, workers=workers)
        finally:
            bar.close()
    provenance = {
        "device": device.type,
        "device_name": device_name(device, workers),
        "torch_version": torch.__version__,
        "dtype": spec.dtype,
        "data": info.as_dict(),
        "seeds": seeds,
        "epochs": epochs,
        "wall_time_s": round(time.perf_counter() - started, 3),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "labgrader_version": __version__,
        "command": _command_line(args, seeds, epochs),
    }
    runs = [store.get(c.as_dict(), s) for c, s in jobs]
    artifact = build_artifact(spec, runs, provenance)
    write_artifact(out, artifact)
    diverged = sum(1 for r in runs if r["diverged"])
    summary = {"out": str(out), "store": str(store.path), "device": device.type,
               "device_name": provenance["device_name"], "data_kind": info.kind, "data_dir": info.dir,
               "n_train": info.n_train, "n_test": info.n_test, "seeds": seeds, "epochs": epochs,
               "configs": len(spec.configs()), "runs": len(jobs), "trained": len(missing),
               "reused": len(jobs) - len(missing), "diverged": diverged,
               "wall_time_s": provenance["wall_time_s"]}
    if getattr(args, "json", False):
        print(json.dumps(summary))
    else:
        print(f"reference: {len(jobs)} runs ({len(missing)} trained, {len(jobs) - len(missing)} reused, "
              f"{diverged} diverged) of {len(spec.configs())} configs on {device.type} ({provenance['device_name']}), "
              f"{info.kind} data ({info.n_train} train / {info.n_test} test), seeds {seeds}, {epochs} epochs, {provenance['wall_time_s']:.1f} s -> {out}")
    return 0

"""How much faster is the batched trainer than the lab's own per-run loop, and how close to matmul speed?

One grid slice (the lr sweep at S=128, plus S=16 and S=32 at lr 0.1, momentum 0.9) trained two
ways in this process: the plain per-run loop (nn.Module + torch.optim.SGD through the kit's
train, as the notebook trains) and the batched trainer as `reference run` uses it. Achieved
GFLOP/s are set against a 2048^3 float32 matmul measured in the same run. --full-grid times the
whole default grid with the batched trainer.

FLOPs per run: every training image counts 6*(784*512 + 512*10) (forward + backward, the usual
6N rule) and every test image 2*(784*512 + 512*10) per epoch. The backward pass never needs the
input gradient of layer 1, so the work actually done is 4*784*512 + 6*512*10 per training
image: both rates are printed.

    python benchmarks/sweep_speed.py [--train 60000] [--test 10000] [--epochs 1] [--seeds 3] [--full-grid]
                                     [--fair-baseline]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from reference import fmnist, kit, synth, trainer  # noqa: E402
from reference.spec import Config, load_spec  # noqa: E402
from reference.sweep import cpu_workers, train_all  # noqa: E402


def matmul_rate(n: int = 2048, repeats: int = 7) -> float:
    """Best-of GFLOP/s of one n^3 float32 matmul with torch's default threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    torch.mm(a, b, out=c)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def flops(runs: int, epochs: int, n_train: int, n_test: int, d: int, h: int, c: int) -> tuple[float, float]:
    """-> (6N-rule FLOPs, FLOPs actually needed) for `runs` runs."""
    params = d * h + h * c
    test = 2 * params * n_test
    rule = 6 * params * n_train + test
    needed = (4 * d * h + 6 * h * c) * n_train + test
    return runs * epochs * rule, runs * epochs * needed


def slice_jobs(seeds: list[int]) -> list[tuple[Config, int]]:
    spec = load_spec()
    lr = spec.sweeps["lr"]
    configs = lr.configs() + [Config(0.1, 16, 0.9), Config(0.1, 32, 0.9)]
    return [(c, s) for c in configs for s in seeds]


def per_run_loop(data, jobs, epochs, h):
    """The notebook's way: one nn.Module and torch.optim.SGD per run, the kit's train loop."""
    (xtr, ytr), (xte, yte) = data
    out = {}
    for c, seed in jobs:
        torch.manual_seed(seed)
        model = kit.build_mlp(xtr.shape[1], 10, hidden_dim=h)
        opt = torch.optim.SGD(model.parameters(), lr=c.lr, momentum=c.momentum)
        out[(c, seed)] = kit.train(torch.nn.CrossEntropyLoss(), model, xtr, ytr, xte, yte, opt, c.batch_size, epochs)
    return out


def per_run_loop_parallel(data, jobs, epochs, h):
    """The same loop with everything the batched path gets except the trainer itself: runs spread
    over worker threads with single-threaded ops, denormals flushed. Timing only: the threads share
    torch's global generator, so shuffles are not the seeds' own."""
    todo, before = list(jobs), torch.get_num_threads()
    lock = threading.Lock()

    def work():
        torch.set_num_threads(1)
        torch.set_flush_denormal(True)
        while True:
            with lock:
                if not todo:
                    return
                job = todo.pop(0)
            per_run_loop(data, [job], epochs, h)

    threads = [threading.Thread(target=work) for _ in range(cpu_workers())]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    torch.set_num_threads(before)


def batched(data, jobs, epochs, h):
    out = {}
    train_all(data, jobs, epochs=epochs, hidden=h, on_run=lambda c, s, res, _: out.__setitem__((c, s), res.history))
    return out


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def report(name: str, seconds: float, work: tuple[float, float], mm: float) -> None:
    rule, needed = work[0] / seconds / 1e9, work[1] / seconds / 1e9
    print(f"{name:<28} {seconds:8.2f} s  {rule:7.1f} GFLOP/s (6N rule, {rule / mm:5.1%} of matmul)  "
          f"{needed:7.1f} GFLOP/s (work done, {needed / mm:5.1%})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=60000, help="synthetic training images (default 60000)")
    ap.add_argument("--test", type=int, default=10000, help="synthetic test images (default 10000)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--data-dir", help="use these Fashion-MNIST files instead of generating synthetic ones")
    ap.add_argument("--full-grid", action="store_true", help="also time the whole default grid, batched")
    ap.add_argument("--skip-slice", action="store_true", help="only the --full-grid timing")
    ap.add_argument("--fair-baseline", action="store_true",
                    help="also time the per-run loop parallel over runs with denormals flushed, as the batched path runs")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="sweep-speed-") as tmp:
        folder = args.data_dir or synth.write_synthetic(Path(tmp) / "data", args.train, args.test, seed=0)
        x_train, y_train, x_test, y_test, info = fmnist.load_arrays(folder, download=False)
    spec = load_spec()
    d, h, c = spec.input_dim, spec.hidden_dim, spec.output_dim
    n_train, n_test = len(y_train), len(y_test)
    seeds = list(range(args.seeds))
    mm = matmul_rate()
    print(f"device cpu ({torch.get_num_threads()} threads, torch {torch.__version__}); {info.kind} data "
          f"{n_train} train / {n_test} test; seeds {seeds}; {args.epochs} epoch(s); float32")
    print(f"matmul 2048^3 float32: {mm:.1f} GFLOP/s")

    plain = ((torch.from_numpy(x_train).float().div_(255), torch.from_numpy(y_train).long()),
             (torch.from_numpy(x_test).float().div_(255), torch.from_numpy(y_test).long()))
    data = trainer.prepare_data(x_train, y_train, x_test, y_test, output_dim=c)

    if not args.skip_slice:
        jobs = slice_jobs(seeds)
        work = flops(len(jobs), args.epochs, n_train, n_test, d, h, c)
        print(f"slice: {len(jobs)} runs (lr sweep at S=128 x 9 lrs, S=16 and S=32 at lr 0.1, mu 0.9)")
        t_loop, h_loop = timed(per_run_loop, plain, jobs, args.epochs, h)
        t_batch, h_batch = timed(batched, data, jobs, args.epochs, h)
        report("per-run loop (kit.train)", t_loop, work, mm)
        report(f"batched ({cpu_workers()} workers)", t_batch, work, mm)
        diffs = sorted(((abs(h_loop[k]["acc"][-1] - h_batch[k]["acc"][-1]), k) for k in jobs
                        if h_batch[k]["loss"][-1] is not None), key=lambda dk: dk[0])
        worst, (cfg, seed) = diffs[-1]
        print(f"speed-up batched vs per-run loop: {t_loop / t_batch:.2f}x")
        print(f"same runs both ways (same init and shuffles; float32 rounding grows over an epoch): |final acc "
              f"difference| median {diffs[len(diffs) // 2][0]:.1e}, largest {worst:.1e} at lr={cfg.lr:g} S={cfg.batch_size} seed {seed}")
        if args.fair_baseline:
            t_fair, _ = timed(per_run_loop_parallel, plain, jobs, args.epochs, h)
            report(f"per-run loop, {cpu_workers()} workers, FTZ", t_fair, work, mm)
            print(f"speed-up batched vs that loop: {t_fair / t_batch:.2f}x (the trainer alone)")
    if args.full_grid:
        jobs = [(cfg, s) for cfg in spec.configs() for s in seeds]
        work = flops(len(jobs), args.epochs, n_train, n_test, d, h, c)
        t_grid, _ = timed(batched, data, jobs, args.epochs, h)
        mm_after = matmul_rate()
        print(f"full default grid: {len(jobs)} runs ({len(spec.configs())} configs x {len(seeds)} seeds), "
              f"matmul after: {mm_after:.1f} GFLOP/s")
        report("full grid, batched", t_grid, work, max(mm, mm_after))
    return 0


if __name__ == "__main__":
    sys.exit(main())

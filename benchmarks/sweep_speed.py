"""How much faster is the batched trainer than the lab's own per-run loop, and how close to matmul speed?

One grid slice (the lr sweep at S=128, plus S=16 and S=32 at lr 0.1, momentum 0.9) trained two
ways in this process: the plain per-run loop (nn.Module + torch.optim.SGD through the kit's
training loop, as the notebook trains) and the batched trainer as `reference run` uses it.
Achieved GFLOP/s are set against a float32 matmul measured in the same run.

--full-grid times the whole default grid (57 runs, the spec's 10 epochs unless --epochs) both
ways: batched, and the per-run loop on a sample (each config once, seed 0, for --loop-epochs
epochs; its time per run-epoch does not depend on the seed or the epoch) scaled to every run
and epoch; --loop-sample all times the whole loop instead. On CUDA it also times the batched
trainer without CUDA graphs and with each --workers count (threads, each with its own stream),
and --tf32 trains the grid once more with TF32 matmuls and reports what that does to the
answers' tie sets. Warm-ups (CUDA and cuBLAS start-up, on a small subset) are not timed.

FLOPs per run: every training image counts 6*(784*512 + 512*10) (forward + backward, the usual
6N rule) and every test image 2*(784*512 + 512*10) per epoch. The backward pass never needs the
input gradient of layer 1, so the work actually done is 4*784*512 + 6*512*10 per training
image: both rates are printed.

    python benchmarks/sweep_speed.py [--device cpu|cuda|auto] [--train 60000] [--test 10000] [--epochs N]
                                     [--seeds 3] [--full-grid] [--skip-slice] [--loop-sample each-config|all]
                                     [--loop-epochs 1] [--workers 1,3] [--tf32] [--fair-baseline] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from reference import fmnist, kit, synth, trainer  # noqa: E402
from reference.analysis import expected_answers  # noqa: E402
from reference.spec import Config, load_spec  # noqa: E402
from reference.sweep import CUDA_WORKERS, cpu_workers, device_name, resolve_device, train_all  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, repeats: int = 7) -> float:
    """Best-of GFLOP/s of one n^3 float32 matmul (n = 2048 on a CPU, 8192 on a GPU) with torch's defaults."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    c = torch.empty(n, n, device=device)
    torch.mm(a, b, out=c)
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=c)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


@contextlib.contextmanager
def tf32(enabled: bool):
    """float32 matmuls through TF32 tensor cores while inside; torch's setting restored afterwards."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


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


def per_run_loop(data, jobs, epochs, h, device):
    """The notebook's way: one nn.Module and torch.optim.SGD per run, the kit's training loop on `device`."""
    (xtr, ytr), (xte, yte) = data
    out = {}
    for c, seed in jobs:
        torch.manual_seed(seed)
        model = kit.build_mlp(xtr.shape[1], 10, hidden_dim=h)
        opt = torch.optim.SGD(model.parameters(), lr=c.lr, momentum=c.momentum)
        out[(c, seed)] = kit.train_loop(torch.nn.CrossEntropyLoss(), model, xtr, ytr, xte, yte, opt, c.batch_size,
                                        epochs, device, progress=False)
    sync(device)
    return out


def per_run_loop_parallel(data, jobs, epochs, h, device):
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
            per_run_loop(data, [job], epochs, h, device)

    threads = [threading.Thread(target=work) for _ in range(cpu_workers())]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    torch.set_num_threads(before)


def batched(data, jobs, epochs, h, workers=None, graphs=None):
    """-> {(config, seed): RunResult} through the sweep's own train_all."""
    out = {}
    train_all(data, jobs, epochs=epochs, hidden=h, workers=workers, graphs=graphs,
              on_run=lambda c, s, res, _: out.__setitem__((c, s), res))
    sync(data.device)
    return out


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def report(name: str, seconds: float, work: tuple[float, float], mm: float) -> None:
    rule, needed = work[0] / seconds / 1e9, work[1] / seconds / 1e9
    print(f"{name:<28} {seconds:8.2f} s  {rule:7.1f} GFLOP/s (6N rule, {rule / mm:5.1%} of matmul)  "
          f"{needed:7.1f} GFLOP/s (work done, {needed / mm:5.1%})")


def answers_of(spec, results: dict, seeds: list[int]) -> dict:
    """The reference answers (tie sets, truths) these runs give, as `reference run` would compute them."""
    runs = [{"config": c.as_dict(), "seed": s, "diverged": r.diverged, "diverged_epoch": r.diverged_epoch,
             "history": r.history} for (c, s), r in results.items()]
    _, questions = expected_answers(spec, runs, seeds)
    return {q: (a.get("tie_set"), a.get("best")) if a["kind"] == "optimum" else a.get("truth")
            for q, a in questions.items() if a["kind"] != "text"}


def final_acc_gap(a: dict, b: dict) -> tuple[float, int]:
    """-> (largest |final test accuracy difference| over runs both trained, runs whose divergence differs)."""
    gap, split = 0.0, 0
    for k, ra in a.items():
        rb = b[k]
        if ra.diverged != rb.diverged:
            split += 1
        elif not ra.diverged:
            gap = max(gap, abs(ra.history["test_acc"][-1] - rb.history["test_acc"][-1]))
    return gap, split


def full_grid(args, spec, data, plain, device, mm, figures) -> None:
    d, h, c = spec.input_dim, spec.hidden_dim, spec.output_dim
    seeds = list(range(args.seeds))
    epochs = args.epochs or spec.epochs
    n_train, n_test = len(data.x_train), len(data.x_test)
    configs = spec.configs()
    jobs = [(cfg, s) for cfg in configs for s in seeds]
    work = flops(len(jobs), epochs, n_train, n_test, d, h, c)
    print(f"full default grid: {len(jobs)} runs ({len(configs)} configs x {len(seeds)} seeds), {epochs} epochs, "
          f"floor at the matmul rate: {work[1] / mm / 1e9:.2f} s (work done), {work[0] / mm / 1e9:.2f} s (6N rule)")

    # warm-ups, not timed: CUDA context, cuBLAS handles, kernels of every batch size
    small = trainer.prepare_data(data.x_train[:4096, :-1], data.y_train[:4096], data.x_test[:512, :-1],
                                 data.y_test[:512], output_dim=c, device=device)
    batched(small, [(cfg, 0) for cfg in configs], 1, h)
    sub = ((plain[0][0][:2048], plain[0][1][:2048]), (plain[1][0][:512], plain[1][1][:512]))
    per_run_loop(sub, [(configs[0], 0)], 1, h, device)

    grid = {}
    workers = [int(w) for w in args.workers.split(",")] if args.workers else [CUDA_WORKERS if device.type == "cuda" else cpu_workers()]
    variants = [(w, None) for w in workers] + ([(workers[0], False)] if device.type == "cuda" and not args.no_eager else [])
    for w, graphs in variants:
        name = f"batched, {w} worker{'s' if w != 1 else ''}" + (", no CUDA graphs" if graphs is False else "")
        try:
            t, res = timed(batched, data, jobs, epochs, h, w, graphs)
        except Exception as e:  # one variant failing must not lose the others' figures
            print(f"{name}: FAILED ({type(e).__name__}: {str(e)[:300]})")
            figures["variants"][name] = {"error": f"{type(e).__name__}: {e}"[:500]}
            continue
        report(name, t, work, mm)
        figures["variants"][name] = {"seconds": round(t, 3), "workers": w, "graphs": graphs is not False}
        grid[name] = (t, res)
    if not grid:
        return
    best_name = min(grid, key=lambda k: grid[k][0])
    t_batch, res_batch = grid[best_name]
    diverged = sum(r.diverged for r in res_batch.values())
    print(f"fastest batched: {best_name}: {t_batch:.2f} s for {len(jobs)} runs x {epochs} epochs ({diverged} runs diverged)")

    if args.loop_sample == "all":
        sample, scale = jobs, 1.0
        loop_epochs = epochs
    else:
        sample = [(cfg, seeds[0]) for cfg in configs]
        loop_epochs = min(args.loop_epochs, epochs)
        scale = len(seeds) * epochs / loop_epochs
    t_sample, h_loop = timed(per_run_loop, plain, sample, loop_epochs, h, device)
    t_loop = t_sample * scale
    what = ("every run, every epoch" if scale == 1 else
            f"timed on {len(sample)} runs (each config once, seed {seeds[0]}) x {loop_epochs} epoch(s) = "
            f"{t_sample:.2f} s, scaled x{scale:g} to {len(jobs)} runs x {epochs} epochs")
    report("per-run loop (kit loop)", t_loop, work, mm)
    print(f"  per-run loop: {what}")
    speedup = t_loop / t_batch
    gaps = sorted(abs(h_loop[k]["test_acc"][loop_epochs - 1] - res_batch[k].history["test_acc"][loop_epochs - 1])
                  for k in sample if not res_batch[k].diverged and h_loop[k]["loss"][loop_epochs - 1] == h_loop[k]["loss"][loop_epochs - 1])
    print(f"speed-up batched ({best_name}) vs per-run loop, same device: {speedup:.2f}x")
    if gaps:
        print(f"same runs both ways after epoch {loop_epochs}: |test acc difference| median {gaps[len(gaps) // 2]:.1e}, "
              f"largest {gaps[-1]:.1e} ({len(gaps)} runs)")
    figures.update({"grid_runs": len(jobs), "grid_epochs": epochs, "batched_s": round(t_batch, 3),
                    "batched_variant": best_name, "loop_s": round(t_loop, 3), "loop_sample_s": round(t_sample, 3),
                    "loop_sample": what, "speedup": round(speedup, 2), "diverged": diverged})

    if args.tf32:
        if device.type != "cuda":
            print("--tf32: only on CUDA; skipped")
            return
        w = figures["variants"][best_name]["workers"]
        with tf32(True):
            t_tf, res_tf = timed(batched, data, jobs, epochs, h, w, None)
        report(f"batched, TF32, {w} worker(s)", t_tf, work, mm)
        base, fast = answers_of(spec, res_batch, seeds), answers_of(spec, res_tf, seeds)
        same = [q for q in base if base[q] == fast[q]]
        gap, split = final_acc_gap(res_batch, res_tf)
        print(f"TF32 vs float32: {len(same)}/{len(base)} answers identical (tie sets, optima, truths); "
              f"largest |final test acc difference| {gap:.1e}; runs diverging one way only: {split}")
        for q in base:
            if base[q] != fast[q]:
                print(f"  {q}: float32 {base[q]}  TF32 {fast[q]}")
        figures["tf32"] = {"seconds": round(t_tf, 3), "answers_identical": len(same), "answers": len(base),
                           "largest_final_test_acc_gap": gap, "diverged_one_way_only": split,
                           "differences": {q: [str(base[q]), str(fast[q])] for q in base if base[q] != fast[q]}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where both ways train (default cpu)")
    ap.add_argument("--train", type=int, default=60000, help="synthetic training images (default 60000)")
    ap.add_argument("--test", type=int, default=10000, help="synthetic test images (default 10000)")
    ap.add_argument("--epochs", type=int, help="epochs per run (default: 1 for the slice, the spec's 10 for --full-grid)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--data-dir", help="use these Fashion-MNIST files instead of generating synthetic ones")
    ap.add_argument("--full-grid", action="store_true", help="also time the whole default grid, batched and per-run loop")
    ap.add_argument("--skip-slice", action="store_true", help="only the --full-grid timing")
    ap.add_argument("--loop-sample", choices=["each-config", "all"], default="each-config",
                    help="per-run loop on the full grid: each config once (seed 0), scaled (default), or every run")
    ap.add_argument("--loop-epochs", type=int, default=1, help="epochs of the sampled per-run loop (default 1)")
    ap.add_argument("--workers", help="comma-separated worker counts to time the batched grid with (default: the sweep's)")
    ap.add_argument("--no-eager", action="store_true", help="on CUDA, skip the timing without CUDA graphs")
    ap.add_argument("--tf32", action="store_true", help="on CUDA, also train the grid with TF32 matmuls and compare answers")
    ap.add_argument("--fair-baseline", action="store_true",
                    help="also time the per-run loop parallel over runs with denormals flushed, as the batched path runs")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)

    with tempfile.TemporaryDirectory(prefix="sweep-speed-") as tmp:
        folder = args.data_dir or synth.write_synthetic(Path(tmp) / "data", args.train, args.test, seed=0)
        x_train, y_train, x_test, y_test, info = fmnist.load_arrays(folder, download=False)
    spec = load_spec()
    d, h, c = spec.input_dim, spec.hidden_dim, spec.output_dim
    n_train, n_test = len(y_train), len(y_test)
    seeds = list(range(args.seeds))
    mm = matmul_rate(device)
    name = device_name(device, cpu_workers()) if device.type == "cpu" else device_name(device, 1)
    cuda_version = f", CUDA {torch.version.cuda}" if device.type == "cuda" else ""
    print(f"device {device.type} ({name}; {torch.get_num_threads()} CPU threads), torch {torch.__version__}{cuda_version}; "
          f"{info.kind} data {n_train} train / {n_test} test; seeds {seeds}; float32")
    print(f"matmul {'8192' if device.type == 'cuda' else '2048'}^3 float32: {mm:.1f} GFLOP/s")
    figures = {"device": device.type, "device_name": name, "torch": torch.__version__, "cuda": torch.version.cuda,
               "data": info.kind, "n_train": n_train, "n_test": n_test, "seeds": seeds, "matmul_gflops": round(mm, 1),
               "variants": {}}

    plain = ((torch.from_numpy(x_train).float().div_(255), torch.from_numpy(y_train).long()),
             (torch.from_numpy(x_test).float().div_(255), torch.from_numpy(y_test).long()))
    data = trainer.prepare_data(x_train, y_train, x_test, y_test, output_dim=c, device=device)

    if not args.skip_slice:
        epochs = args.epochs or 1
        jobs = slice_jobs(seeds)
        work = flops(len(jobs), epochs, n_train, n_test, d, h, c)
        print(f"slice: {len(jobs)} runs (lr sweep at S=128 x 9 lrs, S=16 and S=32 at lr 0.1, mu 0.9), {epochs} epoch(s)")
        t_loop, h_loop = timed(per_run_loop, plain, jobs, epochs, h, device)
        t_batch, r_batch = timed(batched, data, jobs, epochs, h)
        report("per-run loop (kit loop)", t_loop, work, mm)
        report("batched", t_batch, work, mm)
        diffs = sorted(((abs(h_loop[k]["acc"][-1] - r_batch[k].history["acc"][-1]), k) for k in jobs
                        if r_batch[k].history["loss"][-1] is not None), key=lambda dk: dk[0])
        worst, (cfg, seed) = diffs[-1]
        print(f"speed-up batched vs per-run loop: {t_loop / t_batch:.2f}x")
        print(f"same runs both ways (same init and shuffles; float32 rounding grows over an epoch): |final acc "
              f"difference| median {diffs[len(diffs) // 2][0]:.1e}, largest {worst:.1e} at lr={cfg.lr:g} S={cfg.batch_size} seed {seed}")
        figures["slice"] = {"runs": len(jobs), "epochs": epochs, "loop_s": round(t_loop, 3), "batched_s": round(t_batch, 3)}
        if args.fair_baseline:
            t_fair, _ = timed(per_run_loop_parallel, plain, jobs, epochs, h, device)
            report(f"per-run loop, {cpu_workers()} workers, FTZ", t_fair, work, mm)
            print(f"speed-up batched vs that loop: {t_fair / t_batch:.2f}x (the trainer alone)")
    if args.full_grid:
        full_grid(args, spec, data, plain, device, mm, figures)
        mm_after = matmul_rate(device)
        print(f"matmul after: {mm_after:.1f} GFLOP/s")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

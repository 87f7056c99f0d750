"""What the sandbox watchdog costs the training it watches, side by side in one run.

Where no delegated cgroup bounds a sandbox's memory (this machine, and most), the grader's watchdog
(grader/execution/watchdog.py) samples the sandbox's processes from the grader, at a higher priority
than the notebook. Each wake-up preempts one of the training's threads, and a step of a 2-thread
loop waits for its slower thread. This script trains one epoch of the lab's loop (the kit's
train_loop, batch size 128, the machine's cores as threads) on synthetic data (seed 0), alternating
alone and while a watchdog in another process (as in the grader) watches a small idle process tree
(as bwrap > runner > kernel) under --memory, and prints the medians, their ratio, and the CPU share
the watchdog's process used.

    python benchmarks/watchdog_cost.py [--data-dir DIR | --train 60000 --test 10000] [--repeats 5]
        [--memory 4096] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from reference import kit, synth  # noqa: E402

TREE = "import subprocess, sys, time\n" \
       "kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3600)']) for _ in range(3)]\n" \
       "time.sleep(3600)"

DOG = """import sys, time
sys.path.insert(0, {root!r})
from grader.execution.watchdog import Watchdog
dog = Watchdog({pid}, {workdir!r}, memory_bytes={memory}, processes=4096, disk_bytes=1 << 40,
               disk_files=1 << 30).start()
print("watching", flush=True)
sys.stdin.read()
dog.stop()
print(dog.samples, flush=True)
"""


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_epoch(data) -> float:
    torch.manual_seed(0)
    model = kit.build_mlp(784, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    start = time.perf_counter()
    kit.train_loop(nn.CrossEntropyLoss(), model, *data, opt, 128, 1, torch.device("cpu"),
                   generator=torch.Generator().manual_seed(0), progress=False)
    return time.perf_counter() - start


def watched_epoch(data, tree_pid: int, workdir: str, memory_mb: int) -> tuple[float, float, int]:
    """-> (epoch seconds, the watchdog process's CPU seconds per second of the epoch, the samples it took in all)."""
    code = DOG.format(root=str(ROOT), pid=tree_pid, workdir=workdir, memory=memory_mb << 20)
    dog = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    dog.stdout.readline()
    time.sleep(0.3)
    before, start = cpu_s(dog.pid), time.perf_counter()
    seconds = one_epoch(data)
    used, wall = cpu_s(dog.pid) - before, time.perf_counter() - start
    out, _ = dog.communicate("")
    samples = int(out.split()[-1])
    return seconds, used / wall, samples


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="Fashion-MNIST files to train on (default: synthetic, generated here)")
    p.add_argument("--train", type=int, default=60000)
    p.add_argument("--test", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=5, help="epochs timed each way, alternating (default 5)")
    p.add_argument("--memory", type=int, default=4096, help="the watched sandbox's memory limit, MiB (default 4096)")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    if not Path("/proc/self/stat").exists():
        sys.exit("watchdog_cost: needs Linux's /proc (the watchdog reads it)")
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="labgrader-bench-") as tmp:
        data_dir = Path(args.data_dir) if args.data_dir else synth.write_synthetic(Path(tmp) / "data", n_train=args.train,
                                                                                     n_test=args.test, seed=0)
        kit._announced = True
        (x, y), (xt, yt) = kit.get_data(data_dir)
        data = (x, y, xt, yt)
        tree = subprocess.Popen([sys.executable, "-c", TREE], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            one_epoch(data)
            alone, watched, shares, samples = [], [], [], []
            for k in range(args.repeats):
                for way in (("alone", "watched") if k % 2 == 0 else ("watched", "alone")):
                    if way == "alone":
                        alone.append(one_epoch(data))
                    else:
                        s, share, n = watched_epoch(data, tree.pid, tmp, args.memory)
                        watched.append(s)
                        shares.append(share)
                        samples.append(n)
        finally:
            os.killpg(tree.pid, signal.SIGKILL)
            tree.wait()
    a, w = statistics.median(alone), statistics.median(watched)
    figures = {
        "device": "cpu", "cpu": platform.processor() or platform.machine(), "threads": threads,
        "data": {"kind": "synthetic" if not args.data_dir else "given", "n_train": len(x), "n_test": len(xt), "seed": 0},
        "memory_mb": args.memory, "repeats": args.repeats,
        "alone_s": [round(v, 5) for v in alone], "watched_s": [round(v, 5) for v in watched],
        "alone_median_s": round(a, 5), "watched_median_s": round(w, 5), "ratio": round(w / a, 4),
        "watchdog_cpu_share": round(statistics.median(shares), 4), "watchdog_samples": samples,
    }
    print(f"one epoch (batch size 128, {threads} threads, {figures['data']['kind']} data {len(x)}/{len(xt)}, seed 0), "
          f"{args.repeats} each way, alternating; seconds:")
    print("  alone                    " + " ".join(f"{v:6.2f}" for v in alone) + f"   median {a:.3f}")
    print(f"  watched (--memory {args.memory})  " + " ".join(f"{v:6.2f}" for v in watched) + f"   median {w:.3f}")
    print(f"watched / alone: {w / a:.3f}x; the watchdog's process used {100 * figures['watchdog_cpu_share']:.1f}% "
          f"of a core (median), {statistics.median(samples)} samples per epoch")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

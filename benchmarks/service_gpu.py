"""The training service on a GPU against the CPU: one group of concurrent requests, trained together.

For each device, in this one process: a training service with an empty memo, `--requests`
sessions (as many notebooks), each sending the lab's standard request at once (the kit's MLP
seeded 0, SGD momentum 0.9, its own lr, one batch size and epoch count), so the service trains
them as one batch with the batched trainer. The wall time runs from the first request sent to
the last answer read, sockets and all. Then one request alone (the kit's own loop) on each
device. The answers of the two devices are compared (final test accuracy).

    python benchmarks/service_gpu.py [--devices cpu,cuda] [--requests 8] [--epochs 2] [--batch-size 128]
                                     [--train 60000] [--test 10000] [--data-dir DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from grader.service.server import Quota, ServiceOptions, TrainingService  # noqa: E402
from reference import fmnist, kit, kit_remote, synth, trainrequest  # noqa: E402
from reference.sweep import device_name, resolve_device  # noqa: E402

QUOTA = Quota(runs=1000, epochs=100000)


def requests_for(fingerprint: str, lrs, batch_size: int, epochs: int) -> list[tuple[dict, dict]]:
    out = []
    for lr in lrs:
        torch.manual_seed(0)
        model = kit.build_mlp(784, 10)
        out.append(trainrequest.build(data=fingerprint, lr=lr, momentum=0.9, batch_size=batch_size, epochs=epochs,
                                      params=list(model.parameters()), rng=torch.get_rng_state()))
    return out


def serve(service: TrainingService, requests) -> tuple[float, list[dict]]:
    """Send every request at once, each from its own session; -> (wall seconds, answer headers)."""
    answers: list = [None] * len(requests)
    sessions = [service.session(f"nb{i}", QUOTA) for i in range(len(requests))]
    paths = [s.__enter__() for s in sessions]
    try:
        def ask(i):
            answers[i] = kit_remote.exchange(*requests[i], hidden=512, input_dim=784, path=paths[i])[0]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(requests))]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
    finally:
        for s in sessions:
            s.__exit__(None, None, None)
    return seconds, answers


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", default="cpu,cuda", help="comma-separated devices to time (default cpu,cuda)")
    ap.add_argument("--requests", type=int, default=8, help="concurrent requests in the group (default 8)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--train", type=int, default=60000, help="synthetic training images (default 60000)")
    ap.add_argument("--test", type=int, default=10000, help="synthetic test images (default 10000)")
    ap.add_argument("--data-dir", help="use these Fashion-MNIST files instead of generating synthetic ones")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    devices = [resolve_device(d) for d in args.devices.split(",")]

    with tempfile.TemporaryDirectory(prefix="service-gpu-") as tmp:
        folder = Path(args.data_dir) if args.data_dir else synth.write_synthetic(Path(tmp) / "data", args.train, args.test, seed=0)
        x_train, y_train, x_test, y_test, info = fmnist.load_arrays(folder, download=False)
        fingerprint = fmnist.fingerprint(x_train, y_train, x_test, y_test)
        lrs = [round(0.01 + 0.01 * i, 4) for i in range(args.requests)]
        group = requests_for(fingerprint, lrs, args.batch_size, args.epochs)
        alone = requests_for(fingerprint, [0.15], args.batch_size, args.epochs)
        print(f"torch {torch.__version__}, CUDA {torch.version.cuda}; {info.kind} data {info.n_train} train / {info.n_test} test; "
              f"{args.requests} concurrent requests (lr {lrs[0]:g}..{lrs[-1]:g}, momentum 0.9, S={args.batch_size}, "
              f"{args.epochs} epochs, kit MLP seeded 0), memo empty")
        figures = {"torch": torch.__version__, "cuda": torch.version.cuda, "data": info.kind, "n_train": info.n_train,
                   "n_test": info.n_test, "requests": args.requests, "epochs": args.epochs, "batch_size": args.batch_size,
                   "devices": {}}
        finals = {}
        for k, device in enumerate(devices):
            options = ServiceOptions(cache_dir=str(Path(tmp) / f"memo-{k}"), device=device.type,
                                     gather_s=2.0, max_batch_runs=args.requests)
            with TrainingService(options, folder) as service:
                serve(service, requests_for(fingerprint, [0.0077], args.batch_size, 1))  # warm-up, another key: not timed
                before = service.summary()
                t_group, answers = serve(service, group)
                after = service.summary()
                t_alone, lone = serve(service, alone)
                name = device_name(device, service.threads)
            bad = [a.get("reason") or a.get("error") for a in answers + lone if not a.get("ok")]
            if bad:
                print(f"{device.type}: {len(bad)} request(s) not trained: {bad[0]}")
                return 1
            batches = after["batches"] - before["batches"]
            finals[device.type] = [a["history"]["test_acc"][-1] for a in answers]
            per_run = t_group / args.requests
            print(f"{device.type} ({name}): group of {args.requests} in {batches} batch(es) {t_group:.2f} s "
                  f"({per_run:.2f} s per request); one request alone (kit loop) {t_alone:.2f} s")
            figures["devices"][device.type] = {"name": name, "threads": service.threads, "group_s": round(t_group, 3),
                                               "batches": batches, "alone_s": round(t_alone, 3)}
        if len(devices) == 2:
            (a, fa), (b, fb) = ((d.type, figures["devices"][d.type]) for d in devices)
            gap = max(abs(x - y) for x, y in zip(finals[a], finals[b]))
            print(f"group: {b} vs {a}: {fa['group_s'] / fb['group_s']:.2f}x faster; alone: {fa['alone_s'] / fb['alone_s']:.2f}x; "
                  f"largest |final test acc difference| between the devices {gap:.1e}")
            figures.update({"group_speedup": round(fa["group_s"] / fb["group_s"], 2),
                            "alone_speedup": round(fa["alone_s"] / fb["alone_s"], 2), "final_test_acc_gap": gap})
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

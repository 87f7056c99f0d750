"""What the grader's decoded data cache and seeded font list save each notebook, side by side in one run.

get_data timed both ways in this process on the same synthetic data (default 60,000 / 10,000 images,
`labgrader data synth`, seed 0): decoding the gzip files (the kit without a cache) and mapping the
decoded cache (reference/datacache.py). Mapping defers reading to first touch, so each way is also
timed with one pass over every tensor (what training's first epoch pays). Also timed: building and
checking the cache (once per grade run), and `import matplotlib.pyplot` in a fresh process with an
empty MPLCONFIGDIR (every sandbox without the font list) against one seeded with it.
Times are medians of --repeats; the page cache is warm for both ways.

    python benchmarks/data_cache.py [--data-dir DIR | --train 60000 --test 10000] [--repeats 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from grader.execution import fontcache  # noqa: E402
from reference import datacache, kit, synth  # noqa: E402


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def touch(data) -> None:
    for t in (*data[0], *data[1]):
        t.sum()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matplotlib_import_s(config_dir: Path) -> float:
    env = {**os.environ, "MPLCONFIGDIR": str(config_dir), "MPLBACKEND": "Agg"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import matplotlib.pyplot"], env=env, check=True)
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="time this data dir instead of writing synthetic data")
    p.add_argument("--train", type=int, default=60000)
    p.add_argument("--test", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="labgrader-bench-") as tmp:
        tmp = Path(tmp)
        data_dir = Path(args.data_dir) if args.data_dir else synth.write_synthetic(tmp / "data", n_train=args.train,
                                                                                     n_test=args.test, seed=0)
        os.environ["LABGRADER_DATA"] = str(data_dir)
        os.environ.pop(datacache.KIT_ENV, None)
        kit._announced = True
        start = time.perf_counter()
        folder, _ = datacache.prepare(data_dir, tmp / "cache")
        build_s = time.perf_counter() - start
        check_s = median_time(lambda: datacache.prepare(data_dir, tmp / "cache"), args.repeats)

        gzip_s = median_time(kit.get_data, args.repeats)
        gzip_touch_s = median_time(lambda: touch(kit.get_data()), args.repeats)
        os.environ[datacache.KIT_ENV] = str(folder)
        cache_s = median_time(kit.get_data, args.repeats)
        cache_touch_s = median_time(lambda: touch(kit.get_data()), args.repeats)
        manifest = datacache.verify(folder)

        fonts, _ = fontcache.prepare(tmp / "cache")
        fresh, seeded = [], []
        for i in range(args.repeats):
            fresh.append(matplotlib_import_s(tmp / f"fresh-{i}"))
            fontcache.seed(fonts, tmp / f"seeded-{i}")
            seeded.append(matplotlib_import_s(tmp / f"seeded-{i}"))
    figures = {
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "data": {"kind": manifest["kind"], "n_train": manifest["n_train"], "n_test": manifest["n_test"], "seed": 0
                 if not args.data_dir else None, "dir": str(data_dir)},
        "repeats": args.repeats,
        "cache_build_s": build_s, "cache_check_s": check_s,
        "get_data_gzip_s": gzip_s, "get_data_cache_s": cache_s,
        "get_data_and_one_pass_gzip_s": gzip_touch_s, "get_data_and_one_pass_cache_s": cache_touch_s,
        "matplotlib_import_fresh_s": statistics.median(fresh), "matplotlib_import_seeded_s": statistics.median(seeded),
    }
    d = figures["data"]
    print(f"{d['kind']} data, {d['n_train']} train / {d['n_test']} test images; {figures['machine']}; "
          f"medians of {args.repeats}")
    print(f"cache: built in {build_s:.2f} s, checked (sha256 of every file) in {check_s:.2f} s, once per grade run")
    print(f"get_data:            gzip decode {gzip_s * 1000:8.1f} ms   decoded cache {cache_s * 1000:8.1f} ms   "
          f"x{gzip_s / cache_s:.0f}")
    print(f"get_data + one pass: gzip decode {gzip_touch_s * 1000:8.1f} ms   decoded cache {cache_touch_s * 1000:8.1f} ms   "
          f"x{gzip_touch_s / cache_touch_s:.1f}")
    print(f"import matplotlib.pyplot: fresh MPLCONFIGDIR {figures['matplotlib_import_fresh_s'] * 1000:.0f} ms   "
          f"seeded font list {figures['matplotlib_import_seeded_s'] * 1000:.0f} ms   "
          f"saves {(figures['matplotlib_import_fresh_s'] - figures['matplotlib_import_seeded_s']) * 1000:.0f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The fixed cost of grading one notebook: where the seconds go when a notebook trains nothing, and
when every run it asks for comes from the training service's memo.

Each case is one timed `labgrader grade` of one notebook (-j 1, sandboxed), with the decoded data
cache and with --no-data-cache (when this labgrader has that flag), side by side in this run. The
stages come from results.json's per-student `timing` (the runner's timestamps): sandbox and runner
start, kernel start, labgrader's setup cell (the preamble's imports: torch, the kit), `get_data`,
the student's other cells, after the last cell (kernel shutdown, writing the executed notebook),
collecting answers, scoring; "grader, reports" is the rest of the process's wall time (starting
Python, the reference, the feedback and class reports).

    .venv/bin/python benchmarks/notebook_overhead.py [--train-images 60000] [--test-images 10000] [--epochs 2]
        [--repeat 2] [--data-dir DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nbformat  # noqa: E402
from nbformat.v4 import new_code_cell  # noqa: E402

from grader.execution.labnotebook import export_cells, load_lab_notebook  # noqa: E402
from reference import fmnist  # noqa: E402

LABGRADER = [sys.executable, "-m", "grader"]
GET_DATA = "(x_train, y_train), (x_test, y_test) = fmnist_utils.get_data()"
ANSWERS = ('json.dump({"a": "0.1", "b": "yes", "c": 128, "d": "smaller steps"}, open("7b_ex1.json", "w"))\n'
           'json.dump({"a": "0.1", "b": 128, "c": "yes", "d": "like dropout"}, open("7b_ex2.json", "w"))')
PLOT_ONLY = "plot({'acc': [0.5, 0.7, 0.8], 'test_acc': [0.5, 0.6, 0.7]})"
STAGES = [("sandbox_start_s", "sandbox and runner start"), ("kernel_start_s", "kernel start"),
          ("setup_cell_s", "setup cell (preamble: torch, the kit)"), ("get_data_s", "get_data (cell 2)"),
          ("other_cells_s", "the student's other cells"), ("after_last_cell_s", "after the last cell"),
          ("collect_s", "collecting answers"), ("score_s", "scoring"), ("rest_s", "grader, reports (the rest)")]


def notebook(kind: str, epochs: int) -> nbformat.NotebookNode:
    """The lab's own setup cell (get_data split off into cell 2), then a plot or one training run, then answers."""
    seed = load_lab_notebook()
    _, setup, _, train, _, _ = export_cells(seed)
    if GET_DATA not in setup.source:
        sys.exit("benchmark: the lab's setup cell no longer calls get_data as expected")
    cells = [new_code_cell(setup.source.replace(GET_DATA, "").rstrip()), new_code_cell(GET_DATA)]
    if kind == "memo":
        code = train.source.replace("n_epochs=10", f"n_epochs={epochs}")
        cells.append(new_code_cell(code + "\nplot(H)"))
    else:
        cells.append(new_code_cell(PLOT_ONLY))
    cells.append(new_code_cell(ANSWERS))
    nb = nbformat.v4.new_notebook(metadata=seed.metadata)
    nb.cells = cells
    return nb


def grade(subs: Path, out: Path, data_dir: str, cache: Path, extra: list[str]) -> tuple[float, dict, dict]:
    argv = [*LABGRADER, "grade", str(subs), "--out", str(out), "-j", "1", "--data-dir", data_dir,
            "--train-cache", str(cache), "--timeout", "3600", "--cell-timeout", "3600", *extra]
    start = time.perf_counter()
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if run.returncode:
        sys.exit(f"benchmark: grade failed ({run.returncode}): {(run.stderr.strip().splitlines() or ['?'])[-1]}")
    results = json.loads((out / "results.json").read_text())
    (student,) = results["students"]
    if student["status"] != "graded":
        sys.exit(f"benchmark: the notebook ended {student['status']}: {student['reason']}")
    return wall, student, results.get("train_service") or {}


def stages(wall: float, student: dict) -> dict:
    t = student.get("timing") or {}
    cells = dict((n, s) for n, s in t.get("cells", []))
    out = {k: t.get(k) for k in ("sandbox_start_s", "kernel_start_s", "setup_cell_s", "after_last_cell_s",
                                 "collect_s", "score_s")}
    out["get_data_s"] = cells.get(2)
    out["other_cells_s"] = sum(s for n, s in cells.items() if n != 2) if cells else None
    out["rest_s"] = wall - student["duration_s"] if t else None
    out["total_s"] = wall
    return out


def median_stages(samples: list[dict]) -> dict:
    keys = samples[0].keys()
    return {k: (statistics.median(s[k] for s in samples) if all(s[k] is not None for s in samples) else None)
            for k in keys}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-images", type=int, default=60000, help="synthetic training images (default 60000)")
    ap.add_argument("--test-images", type=int, default=10000, help="synthetic test images (default 10000)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of the memo notebook's run (default 2)")
    ap.add_argument("--repeat", type=int, default=2, help="timed gradings per case; the median is shown (default 2)")
    ap.add_argument("--data-dir", help="use these Fashion-MNIST files instead of generating synthetic ones")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="notebook-overhead-") as tmp:
        return run(args, Path(tmp))


def run(args, work: Path) -> int:
    data_dir = args.data_dir
    if not data_dir:
        data_dir = str(work / "data")
        made = subprocess.run([*LABGRADER, "data", "synth", "--out", data_dir, "--train", str(args.train_images),
                               "--test", str(args.test_images)], cwd=ROOT, capture_output=True, text=True)
        if made.returncode:
            sys.exit(f"benchmark: data synth failed: {made.stderr.strip()}")
    kind = "synthetic" if fmnist.is_synthetic(Path(data_dir)) else "real"
    helptext = subprocess.run([*LABGRADER, "grade", "--help"], cwd=ROOT, capture_output=True, text=True).stdout
    variants = {"data cache": []}
    if "--no-data-cache" in helptext:
        variants["no data cache"] = ["--no-data-cache"]
    figures: dict = {"data": {"kind": kind, "dir": data_dir if args.data_dir else None,
                              "n_train": args.train_images, "n_test": args.test_images},
                     "device": "cpu", "seed": 0, "repeat": args.repeat, "epochs": args.epochs, "cases": {}}
    counter = iter(range(10 ** 6))
    for case in ("nothing", "memo"):
        subs = work / case / "class" / "student"
        subs.mkdir(parents=True)
        nbformat.write(notebook(case, args.epochs), subs / "lab7b.ipynb")
        cache = work / case / "memo"
        if case == "memo":
            print("benchmark: memo notebook, warming the memo (not timed) ...", file=sys.stderr, flush=True)
            grade(subs.parent, work / case / f"out{next(counter)}", data_dir, cache, [])
        for name, extra in variants.items():
            samples, service = [], {}
            for _ in range(args.repeat):
                wall, student, service = grade(subs.parent, work / case / f"out{next(counter)}", data_dir, cache, extra)
                samples.append(stages(wall, student))
            figures["cases"][f"{case}, {name}"] = {"stages": median_stages(samples), "train_service": service}
            print(f"benchmark: {case}, {name}: {figures['cases'][f'{case}, {name}']['stages']['total_s']:.2f} s",
                  file=sys.stderr, flush=True)
    if "no data cache" in variants:
        figures["ratios"] = {case: round(figures["cases"][f"{case}, no data cache"]["stages"]["total_s"]
                                         / figures["cases"][f"{case}, data cache"]["stages"]["total_s"], 3)
                             for case in ("nothing", "memo")}
    print(json.dumps(figures, indent=2) if args.json else report(figures))
    return 0


def report(f: dict) -> str:
    cases = list(f["cases"])
    lines = [f"data: {f['data']['kind']} Fashion-MNIST, {f['data']['n_train']} train / {f['data']['n_test']} test images; "
             f"device cpu (the service's); every notebook seeded {f['seed']} by the grader; median of {f['repeat']} "
             f"gradings per case; memo notebook: 1 run of {f['epochs']} epochs, answered from a warm memo",
             "", f"{'seconds':38}" + "".join(f"{c:>22}" for c in cases)]
    for key, label in [*STAGES, ("total_s", "total (wall of `labgrader grade`)")]:
        row = [f["cases"][c]["stages"].get(key) for c in cases]
        lines.append(f"{label:38}" + "".join(f"{'-' if v is None else f'{v:.2f}':>22}" for v in row))
    for case, ratio in f.get("ratios", {}).items():
        lines.append(f"{case}: without the data cache / with it: {ratio:.2f}x")
    memo = [f["cases"][c]["train_service"] for c in cases if c.startswith("memo")]
    if memo:
        lines.append(f"train service (memo cases): {json.dumps(memo[-1], sort_keys=True)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

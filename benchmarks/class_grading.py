"""Grading a whole class with and without the training service: wall time side by side.

A class of N students (default 30) hands in the real lab notebook (the export's cells of the
packaged reference/lab/lab7b.ipynb), each training 5 configurations for 10 epochs with the notebook's
own code (build_mlp, optim.SGD, train with the seed's keywords): 4 configurations every
student runs in the same order, then 1 drawn per student from a pool of 3. Each notebook
writes 7b_ex1.json and 7b_ex2.json, the optima computed from its own runs. Comments and one
variable name vary per student, so no two notebooks are byte-identical.

Timed with time.perf_counter around one `labgrader grade` process each, in this run:
  - the class with -j 2 and --no-train-service (every notebook trains in its sandbox),
  - the class with -j 2 and the training service, cold (a fresh, empty --train-cache),
  - the class again with the service and the memo the cold run filled (every run answered from the
    memo: what the notebooks cost without any training),
  - the first student alone (-j 1), without and with the service (cold),
each with the CPU time the whole machine spent meanwhile (from /proc/stat, so run it on a quiet
machine), then the statuses and answers of the two class runs are compared student by student, and the
final accuracies the notebooks printed are compared run by run. Goals: class speed-up
(without / with service) >= 5x; the class with the service <= 2x the cost of one notebook.

--class-kind own-order: a class (default 10 students) where each student trains 5 learning rates
of the lr sweep (S=128, momentum 0.9) in its own order, as real students loop over the grid: no two
runs share initial weights, so the memo cannot help and the service's gain is what batching
concurrent runs buys.

    .venv/bin/python benchmarks/class_grading.py [--quick] [--class-kind shared|own-order] [--device cuda]
        [--students 30] [--epochs 10] [--one-repeats K] [--one-only]
        [--jobs 2] [--train-images 60000] [--test-images 10000] [--data-dir DIR] [--keep DIR] [--json]

--one-repeats K grades the one notebook K times each way, alternating without and with the service, and
reports the medians (one run of either on a shared 2-core machine varies by 10% and more); --one-only
grades only that notebook.

--quick shrinks everything for a smoke run: 4 students, 2 epochs, 6000/1000 synthetic images.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import nbformat  # noqa: E402
from nbformat.v4 import new_code_cell  # noqa: E402

from grader.execution.labnotebook import export_cells, load_lab_notebook  # noqa: E402
from make_examples import LIKE_DROPOUT, NOISE_YES, REASON_YES, WHY_FASTER  # noqa: E402
from reference import fmnist  # noqa: E402

# (lr, batch size, momentum), from the assignment's sweep grid
SHARED = [(0.1, 128, 0.9), (0.03, 128, 0.9), (0.1, 256, 0.9), (0.01, 128, 0.9)]
POOL = [(0.2, 128, 0.9), (0.1, 64, 0.9), (0.01, 128, 0.5)]
LR_SWEEP = [0.001, 0.003, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0]  # reference/specs/lab7b.toml [sweeps.lr]
OWN_ORDER_RUNS = 5
STORE_NAMES = ("runs", "results", "histories", "sweep", "H_all")
NOTEBOOK = "lab7b.ipynb"
QUICK = {"students": 4, "epochs": 2, "train_images": 6000, "test_images": 1000}
FULL = {"students": 30, "epochs": 10, "train_images": 60000, "test_images": 10000}
GENEROUS_LIMITS = ["--timeout", "7200", "--cell-timeout", "7200", "--cpu-time", "86400"]  # slow is not a failure here
SERVICE_LINE = re.compile(r"train(ing)?[ _-]service|train[ _-]cache", re.I)


# the class -------------------------------------------------------------------------------------

def student_name(i: int) -> str:
    return f"student{i:02d}"


def student_configs(i: int, kind: str = "shared") -> list[tuple[float, int, float]]:
    """shared: the shared four in the same order, then one from the pool, drawn deterministically per
    student; own-order: 5 learning rates of the lr sweep in this student's own order."""
    if kind == "own-order":
        return [(lr, 128, 0.9) for lr in random.Random(1000 + i).sample(LR_SWEEP, OWN_ORDER_RUNS)]
    return SHARED + [random.Random(i).choice(POOL)]


def training_cell(seed_code: str, cfg: tuple, epochs: int, store: str, note: str) -> str:
    """The seed's training cell with this configuration's numbers, its history kept and printed."""
    lr, bs, mu = cfg
    code = seed_code
    for pattern, value in ((r"\blr=[0-9.e-]+", f"lr={lr}"), (r"\bmomentum=[0-9.e-]+", f"momentum={mu}"),
                           (r"\bbatch_size=\d+", f"batch_size={bs}"), (r"\bn_epochs=\d+", f"n_epochs={epochs}")):
        code, n = re.subn(pattern, value, code)
        if n != 1:
            sys.exit(f"benchmark: the seed's training cell has {n} matches of {pattern!r}, expected 1")
    code = re.sub(r"\A#[^\n]*", f"# {note}", code)
    return (f"{code}\n{store}[({lr}, {bs}, {mu})] = H\n"
            f"print('RUN', {lr}, {bs}, {mu}, H['acc'][-1], max(H['test_acc']))")


def answer_cells(store: str) -> tuple[str, str]:
    """Optima from the student's own runs; the texts of the example submissions."""
    pick = (f"def best(fixed, metric):\n"
            f"    chosen = {{c: h for c, h in {store}.items() if all(c[i] == v for i, v in fixed.items())}} or {store}\n"
            f"    return max(chosen, key=lambda c: metric(chosen[c]))\n"
            f"final = lambda h: h['acc'][-1]\n"
            f"top_test = lambda h: max(h['test_acc'])\n")
    ex1 = {"a": "LR_TRAIN", "b": REASON_YES, "c": "BS_TRAIN", "d": WHY_FASTER}
    ex2 = {"a": "LR_TEST", "b": "BS_TEST", "c": NOISE_YES, "d": LIKE_DROPOUT}
    fill = {'"LR_TRAIN"': "f'{best({1: 128, 2: 0.9}, final)[0]:g}'",
            '"BS_TRAIN"': "str(best({0: 0.1, 2: 0.9}, final)[1])",
            '"LR_TEST"': "f'{best({1: 128, 2: 0.9}, top_test)[0]:g}'",
            '"BS_TEST"': "str(best({0: 0.1, 2: 0.9}, top_test)[1])"}

    def dump(name, answers):
        text = json.dumps(answers, indent=4)
        for k, v in fill.items():
            text = text.replace(k, v)
        return f"answers = {text}\nprint(answers)\njson.dump(answers, open({name!r}, \"w\"))"

    return pick + dump("7b_ex1.json", ex1), dump("7b_ex2.json", ex2)


def class_notebook(seed: nbformat.NotebookNode, i: int, epochs: int, kind: str = "shared") -> nbformat.NotebookNode:
    """The lab notebook as student i hands it in: intro, setup, Exercise 1, runs, answers, Exercise 2."""
    intro, setup, ex1_md, seed_train, _, ex2_md = export_cells(seed)
    store = STORE_NAMES[i % len(STORE_NAMES)]
    name = student_name(i)
    runs = [new_code_cell(f"{store} = {{}}  # {name}: (lr, batch size, momentum) -> history")]
    for k, cfg in enumerate(student_configs(i, kind), 1):
        runs.append(new_code_cell(training_cell(seed_train.source, cfg, epochs, store,
                                                f"{name}, run {k}: lr={cfg[0]}, S={cfg[1]}, momentum={cfg[2]}")))
    ex1, ex2 = answer_cells(store)
    nb = nbformat.v4.new_notebook(metadata=seed.metadata)
    nb.cells = [intro, setup, ex1_md, *runs, new_code_cell(ex1), ex2_md, new_code_cell(ex2)]
    nbformat.validate(nb)
    return nb


def write_class(root: Path, n: int, epochs: int, kind: str = "shared") -> list[str]:
    seed = load_lab_notebook()
    names = []
    for i in range(n):
        folder = root / student_name(i)
        folder.mkdir(parents=True)
        nbformat.write(class_notebook(seed, i, epochs, kind), folder / NOTEBOOK)
        names.append(student_name(i))
    return names


# data ------------------------------------------------------------------------------------------

def idx_count(data_dir: Path, name: str) -> int:
    path = fmnist.find_file(data_dir, name)
    if path is None:
        sys.exit(f"benchmark: {data_dir} has no {name}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return int.from_bytes(f.read(8)[4:8], "big")


def prepare_data(args, work: Path) -> dict:
    if args.data_dir:
        folder = Path(args.data_dir)
    else:
        folder = work / "data"
        run = subprocess.run([*LABGRADER, "data", "synth", "--out", str(folder), "--train", str(args.train_images),
                              "--test", str(args.test_images)], cwd=ROOT, capture_output=True, text=True)
        if run.returncode:
            sys.exit(f"benchmark: data synth failed ({run.returncode}): {run.stderr.strip()}")
    return {"dir": str(folder), "kind": "synthetic" if fmnist.is_synthetic(folder) else "real",
            "n_train": idx_count(folder, fmnist.TRAIN_IMAGES), "n_test": idx_count(folder, fmnist.TEST_IMAGES)}


# grading ---------------------------------------------------------------------------------------

LABGRADER = [sys.executable, "-m", "grader"]


def grade_argv(subs: Path, out: Path, args, *, jobs: int, service: bool, cache: Path) -> list[str]:
    argv = [*LABGRADER, "grade", str(subs), "--out", str(out), "-j", str(jobs), "--data-dir", args.data["dir"],
            *GENEROUS_LIMITS]
    if args.no_sandbox:
        argv.append("--no-sandbox")
    if service:
        return argv + ["--train-cache", str(cache), "--device", args.device]
    return argv + ["--no-train-service"]


def cpu_ticks() -> list[int] | None:
    """The machine's CPU counters (user nice system idle iowait irq softirq steal), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None


def cpu_used(before: list[int] | None, after: list[int] | None) -> dict | None:
    """CPU seconds the machine spent between two samples, and the busy share of all its cores."""
    if before is None or after is None:
        return None
    d = [b - a for a, b in zip(before, after)]
    hz = os.sysconf("SC_CLK_TCK")
    busy = d[0] + d[1] + d[2] + d[5] + d[6]
    total = busy + d[3] + d[4] + d[7]
    return {"cpu_s": round(busy / hz, 1), "steal_s": round(d[7] / hz, 1), "cores": os.cpu_count(),
            "busy": round(busy / total, 3) if total else None}


def grade(label: str, subs: Path, work: Path, args, *, jobs: int, service: bool, cache: Path | None = None) -> dict:
    """One timed `labgrader grade`; -> wall time, CPU time, results.json, and what it said about the service.
    cache: an existing memo to grade from (default: a fresh, empty one)."""
    slug = label.replace(" ", "-")
    out = work / "out" / slug
    if cache is None:
        cache = work / "cache" / slug
        cache.mkdir(parents=True)
    argv = grade_argv(subs, out, args, jobs=jobs, service=service, cache=cache)
    print(f"benchmark: {label} ...", file=sys.stderr, flush=True)
    ticks = cpu_ticks()
    start = time.perf_counter()
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    cpu = cpu_used(ticks, cpu_ticks())
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    (logs / f"{slug}.out").write_text(run.stdout)
    (logs / f"{slug}.err").write_text(run.stderr)
    if run.returncode:
        last = (run.stderr.strip().splitlines() or ["(no output)"])[-1]
        sys.exit(f"benchmark: {label} failed ({run.returncode}): {last}; logs in {logs} (use --keep to keep them)")
    results = json.loads((out / "results.json").read_text())
    said = [line.strip() for line in run.stderr.splitlines() if SERVICE_LINE.search(line)]
    print(f"benchmark: {label}: {wall:.1f} s", file=sys.stderr, flush=True)
    return {"wall_s": wall, "cpu": cpu, "cache": cache, "out": out, "results": results,
            "service_block": results.get("train_service"), "service_line": said[-1] if said else None}


def compare(a: dict, b: dict) -> tuple[list[str], list[str]]:
    """-> (status differences, answer differences), student by student."""
    ra = {r["student"]: r for r in a["results"]["students"]}
    rb = {r["student"]: r for r in b["results"]["students"]}
    statuses, answers = [], []
    for s in sorted(ra.keys() | rb.keys()):
        if s not in ra or s not in rb:
            statuses.append(f"{s}: only in one run")
            continue
        if ra[s]["status"] != rb[s]["status"]:
            statuses.append(f"{s}: {ra[s]['status']} vs {rb[s]['status']}")
        for qid in sorted(ra[s]["questions"].keys() | rb[s]["questions"].keys()):
            x = ra[s]["questions"].get(qid, {}).get("answer")
            y = rb[s]["questions"].get(qid, {}).get("answer")
            if x != y:
                answers.append(f"{s} {qid}: {x!r} vs {y!r}")
    return statuses, answers


def printed_runs(out: Path) -> dict:
    """(student, lr, S, mu) -> (final acc, best test acc), from the RUN lines of the executed notebooks."""
    found = {}
    for path in sorted((out / "executed").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            for o in cell.get("outputs", []):
                if o.get("output_type") != "stream" or o.get("name") != "stdout":
                    continue
                for line in o.get("text", "").splitlines():
                    parts = line.split()
                    if len(parts) == 6 and parts[0] == "RUN":
                        found[(path.stem, *parts[1:4])] = (float(parts[4]), float(parts[5]))
    return found


def largest_difference(a: dict, b: dict) -> tuple[int, float | None]:
    pa, pb = printed_runs(a["out"]), printed_runs(b["out"])
    common = pa.keys() & pb.keys()
    if not common:
        return 0, None
    return len(common), max(max(abs(pa[k][0] - pb[k][0]), abs(pa[k][1] - pb[k][1])) for k in common)


def counts(run: dict) -> dict:
    out: dict = {}
    for r in run["results"]["students"]:
        out[r["status"]] = out.get(r["status"], 0) + 1
    return out


# the report ------------------------------------------------------------------------------------

CLASS_KINDS = {"shared": f"{len(SHARED)} shared in the same order, 1 from a pool of {len(POOL)}",
               "own-order": f"{OWN_ORDER_RUNS} learning rates of the lr sweep, each student in its own order"}


def text_report(f: dict) -> str:
    w = f["wall_s"]
    r = f["ratios"]
    head = [
        f"device: {f['device']} (where the service trains); sandbox: {f['sandbox']}",
        f"data: {f['data']['kind']} Fashion-MNIST, {f['data']['n_train']} train / {f['data']['n_test']} test images",
        f"seeds: every notebook seeded {f['seed']} by the grader before its first cell; synthetic data seed 0",
        f"class ({f['class_kind']}): {f['students']} students, -j {f['jobs']}; {f['configs_per_notebook']} configurations "
        f"per notebook ({CLASS_KINDS[f['class_kind']]}), {f['epochs']} epochs each; "
        f"the class trains {f['distinct_configs']} distinct ones ({f['trainings']} trainings in all)",
        ""]
    one = _one_report(f)
    if f["one_only"]:
        return "\n".join(head + one)
    lines = head + [
        f"{'wall time':44} {'seconds':>9}",
        f"{'class, without the service (-j %d)' % f['jobs']:44} {w['class_without']:9.1f}",
        f"{'class, with the service, cold (-j %d)' % f['jobs']:44} {w['class_with']:9.1f}",
        f"{'class, with the service, memo already full':44} {w['class_warm']:9.1f}",
        f"{'one notebook, without the service (-j 1)':44} {w['one_without']:9.1f}",
        f"{'one notebook, with the service, cold (-j 1)':44} {w['one_with']:9.1f}",
        "",
        f"class speed-up, without / with the service: {r['speedup']:.2f}x (goal >= 5x)",
        f"class with the service / one notebook without: {r['class_with_over_one_without']:.2f}x (goal <= 2x)",
        f"class with the service / one notebook with:    {r['class_with_over_one_with']:.2f}x (goal <= 2x)",
        *one[-1:],
        f"class with every run from the memo / one notebook without: {r['class_warm_over_one_without']:.2f}x "
        "(no training at all: the notebooks' own cost)",
        *_cpu_report(f),
        "",
        f"statuses: without {f['statuses']['without']}, with {f['statuses']['with']}; "
        + ("identical for every student" if f["statuses_identical"] else "DIFFERENT"),
        "answers: " + ("identical for every student" if not f["answer_differences"] else
                       f"{len(f['answer_differences'])} differ"),
    ]
    if f["history_runs_compared"]:
        lines.append(f"printed accuracies: {f['history_runs_compared']} runs compared, largest |difference| "
                     f"{f['history_max_abs_diff']:.2e} (final train acc, best test acc)")
    for key, label in (("class_with", "class"), ("one_with", "one notebook")):
        svc = f["train_service"][key]
        if svc["results"] is not None:
            lines.append(f"train service ({label}, results.json): {json.dumps(svc['results'], sort_keys=True)}")
        if svc["stderr"]:
            lines.append(f"train service ({label}, stderr): {svc['stderr']}")
    if f["warm_differences"]:
        lines.append("WARNING: the class graded from the memo differs from the cold run: " + "; ".join(f["warm_differences"]))
    if f["status_differences"] or f["answer_differences"]:
        lines.append("WARNING: the two class runs differ: " + "; ".join(f["status_differences"] + f["answer_differences"]))
    return "\n".join(lines)


def _served(run: dict) -> dict | None:
    """How the service answered, from results.json's train_service block."""
    block = run["service_block"]
    if not isinstance(block, dict):
        return None
    return {k: block.get(k) for k in ("trained", "from_memo", "joined")}


def _cpu_report(f: dict) -> list[str]:
    """CPU seconds per timed run and the busy share of the machine's cores: a class that keeps every core busy
    cannot get faster by starting more at once, only by doing less."""
    out = []
    labels = {"class_without": "class without the service", "class_with": "class with the service, cold",
              "class_warm": "class with the memo already full", "one_without": "one notebook without the service",
              "one_with": "one notebook with the service"}
    for key, label in labels.items():
        c = f["cpu"].get(key)
        if c and c["busy"] is not None:
            out.append(f"CPU, {label + ':':38} {c['cpu_s']:8.1f} s busy, {100 * c['busy']:.0f}% of {c['cores']} cores"
                       f" (steal {c['steal_s']} s)")
    if f["warm_cpu_s_per_notebook"] is not None:
        out.append(f"CPU per notebook with every run from the memo: {f['warm_cpu_s_per_notebook']:.1f} s "
                   f"(served: {json.dumps(f['warm_served'], sort_keys=True)})")
    return out


def _one_report(f: dict) -> list[str]:
    """One notebook graded alone, without and with the service: each repeat, the medians and their ratio."""
    walls, w = f["one_wall_s"], f["wall_s"]
    out = []
    if f["one_repeats"] > 1 or f["one_only"]:
        out.append(f"one notebook alone (-j 1), {f['one_repeats']} time(s) each way, alternating; seconds:")
        for way in ("without", "with"):
            out.append(f"  {way + ' the service':20} " + " ".join(f"{v:7.1f}" for v in walls[way])
                       + f"   median {w['one_' + way]:.1f}")
    out.append(f"one notebook with the service / without:  {f['ratios']['one_with_over_one_without']:.2f}x (goal <= 1x)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--class-kind", choices=(*CLASS_KINDS, "both"), default="shared",
                    help="shared: 4 configurations in the same order + 1 from a pool (default); own-order: "
                         "5 learning rates per student, each in its own order (default 10 students); both: "
                         "the two classes one after the other, in this one run")
    ap.add_argument("--students", type=int, help="class size (default 30, own-order 10; --quick 4)")
    ap.add_argument("--epochs", type=int, help="epochs per configuration (default 10; --quick 2)")
    ap.add_argument("--jobs", type=int, default=2, help="grade -j for the class runs (default 2)")
    ap.add_argument("--train-images", type=int, help="synthetic training images (default 60000; --quick 6000)")
    ap.add_argument("--test-images", type=int, help="synthetic test images (default 10000; --quick 1000)")
    ap.add_argument("--data-dir", help="use these Fashion-MNIST files instead of generating synthetic ones")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu",
                    help="where the training service trains (grade --device; default cpu)")
    ap.add_argument("--no-sandbox", action="store_true", help="pass --no-sandbox to grade (when bwrap is missing)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 students, 2 epochs, 6000/1000 images")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR (new or empty) and keep it: notebooks, outputs, logs")
    ap.add_argument("--one-repeats", type=int, default=1, metavar="K",
                    help="grade the one notebook K times each way, alternating, and report the medians (default 1)")
    ap.add_argument("--one-only", action="store_true",
                    help="only the one notebook, without and with the service (no class runs)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args(argv)
    if args.class_kind == "both":
        results = {}
        for kind in CLASS_KINDS:
            one = argparse.Namespace(**{**vars(args), "class_kind": kind,
                                        "keep": str(Path(args.keep) / kind) if args.keep else None})
            code, results[kind] = choose(ap, one)
            if code:
                return code
            if not args.json:
                print(text_report(results[kind]) + "\n", flush=True)
        if args.json:
            print(json.dumps(results, indent=2))
        return 0
    code, figures = choose(ap, args)
    if code == 0:
        print(json.dumps(figures, indent=2) if args.json else text_report(figures))
    return code


def choose(ap, args) -> tuple[int, dict]:
    """Defaults for this class kind, then the run in a kept or a temporary folder."""
    if args.students is None and args.class_kind == "own-order" and not args.quick:
        args.students = 10
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.students < 1 or args.jobs < 1 or args.epochs < 1 or args.one_repeats < 1:
        ap.error("--students, --jobs, --epochs and --one-repeats must be at least 1")

    if args.keep:
        work = Path(args.keep)
        if work.exists() and any(work.iterdir()):
            sys.exit(f"benchmark: --keep {work} is not empty; a reused output folder would resume, not regrade")
        work.mkdir(parents=True, exist_ok=True)
        return run(args, work.resolve())
    with tempfile.TemporaryDirectory(prefix="class-grading-") as tmp:
        return run(args, Path(tmp))


def run(args, work: Path) -> tuple[int, dict]:
    args.data = prepare_data(args, work)
    names = write_class(work / "class", args.students, args.epochs, args.class_kind)
    one = work / "one" / names[0]  # the first student alone, a copy (grade skips symlinks)
    one.mkdir(parents=True)
    (one / NOTEBOOK).write_bytes((work / "class" / names[0] / NOTEBOOK).read_bytes())
    one = one.parent

    if not args.one_only:
        class_without = grade("class without service", work / "class", work, args, jobs=args.jobs, service=False)
        class_with = grade("class with service", work / "class", work, args, jobs=args.jobs, service=True)
        class_warm = grade("class with service warm memo", work / "class", work, args, jobs=args.jobs, service=True,
                           cache=class_with["cache"])
    ones = {"without": [], "with": []}
    for k in range(args.one_repeats):
        for way in ("without", "with"):
            suffix = f" #{k + 1}" if args.one_repeats > 1 else ""
            ones[way].append(grade(f"one {way} service{suffix}", one, work, args, jobs=1, service=way == "with"))
    one_without, one_with = ones["without"][-1], ones["with"][-1]
    one_s = {way: [g["wall_s"] for g in runs] for way, runs in ones.items()}
    if args.one_only:
        class_without = class_with = class_warm = one_without
    statuses, answers = compare(class_without, class_with)
    warm_statuses, warm_answers = compare(class_with, class_warm)
    n_runs, diff = largest_difference(class_without, class_with)
    configs = [c for i in range(args.students) for c in student_configs(i, args.class_kind)]
    w = {"class_without": class_without["wall_s"], "class_with": class_with["wall_s"], "class_warm": class_warm["wall_s"],
         "one_without": statistics.median(one_s["without"]), "one_with": statistics.median(one_s["with"])}
    timed = {"one_without": one_without, "one_with": one_with}
    if not args.one_only:
        timed.update(class_without=class_without, class_with=class_with, class_warm=class_warm)
    figures = {
        "device": args.device, "sandbox": not args.no_sandbox, "seed": 0,
        "data": {**args.data, "dir": args.data["dir"] if args.data_dir or args.keep else None},
        "class_kind": args.class_kind, "students": args.students, "jobs": args.jobs, "epochs": args.epochs,
        "configs_per_notebook": len(student_configs(0, args.class_kind)), "distinct_configs": len(set(configs)), "trainings": len(configs),
        "one_only": args.one_only, "one_repeats": args.one_repeats,
        "one_wall_s": {way: [round(v, 3) for v in walls] for way, walls in one_s.items()},
        "wall_s": {k: round(v, 3) for k, v in w.items()},
        "ratios": {"speedup": round(w["class_without"] / w["class_with"], 3),
                   "class_with_over_one_without": round(w["class_with"] / w["one_without"], 3),
                   "class_with_over_one_with": round(w["class_with"] / w["one_with"], 3),
                   "one_with_over_one_without": round(w["one_with"] / w["one_without"], 3),
                   "class_warm_over_one_without": round(w["class_warm"] / w["one_without"], 3)},
        "cpu": {k: g["cpu"] for k, g in timed.items()},
        "warm_cpu_s_per_notebook": (round(class_warm["cpu"]["cpu_s"] / args.students, 2)
                                    if class_warm["cpu"] and not args.one_only else None),
        "warm_served": _served(class_warm), "warm_differences": warm_statuses + warm_answers,
        "goals": {"speedup": ">= 5x", "class_with_over_one_without": "<= 2x", "class_with_over_one_with": "<= 2x"},
        "statuses": {"without": counts(class_without), "with": counts(class_with)},
        "statuses_identical": not statuses, "status_differences": statuses, "answer_differences": answers,
        "history_runs_compared": n_runs, "history_max_abs_diff": diff,
        "train_service": {k: {"results": g["service_block"], "stderr": g["service_line"]}
                          for k, g in (("class_with", class_with), ("one_with", one_with))},
        "work_dir": str(work) if args.keep else None,
    }
    return 0, figures


if __name__ == "__main__":
    sys.exit(main())

"""A hand-made reference artifact with known tie sets and truths, and a fake notebook executor.

The artifact follows DESIGN.md's format; its numbers are designed so the expected answers are
obvious: ex1.a tie set {0.1, 0.2}, ex1.b truth no, ex1.c {32}, ex2.a {0.03}, ex2.b {64}, ex2.c yes.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import sys
import types
from dataclasses import dataclass
from pathlib import Path

from reference.spec import load_spec

SPREAD = 0.002  # per-seed offsets -SPREAD, 0, +SPREAD: std = SPREAD, se = SPREAD / sqrt(3)
TRAIN = {
    "lr": {0.001: 0.70, 0.003: 0.78, 0.01: 0.85, 0.03: 0.89, 0.1: 0.934, 0.2: 0.932, 0.3: 0.90, 0.5: 0.85, 1.0: 0.10},
    "batch": {16: 0.93, 32: 0.95, 64: 0.94, 128: 0.934, 256: 0.91, 512: 0.88, 1024: 0.84},
    "momentum": {0.0: 0.80, 0.5: 0.83, 0.9: 0.85, 0.95: 0.86, 0.99: 0.84},
}
TEST = {
    "lr": {0.001: 0.70, 0.003: 0.77, 0.01: 0.83, 0.03: 0.88, 0.1: 0.87, 0.2: 0.86, 0.3: 0.85, 0.5: 0.80, 1.0: 0.10},
    "batch": {16: 0.86, 32: 0.87, 64: 0.89, 128: 0.87, 256: 0.85, 512: 0.84, 1024: 0.82},
    "momentum": {0.0: 0.80, 0.5: 0.81, 0.9: 0.83, 0.95: 0.84, 0.99: 0.82},
}
TIE_SETS = {"ex1.a": [0.1, 0.2], "ex1.c": [32], "ex2.a": [0.03], "ex2.b": [64]}
TRUTHS = {"ex1.b": False, "ex2.c": True}
SEEDS = [0, 1, 2]
EPOCHS = 10


def _history(final_train: float, best_test: float, diverged: bool) -> dict:
    if diverged:
        chance = 0.1
        return {"acc": [0.5, 0.3] + [chance] * (EPOCHS - 2), "test_acc": [0.5, 0.3] + [chance] * (EPOCHS - 2),
                "loss": [1.0, 2.0] + [None] * (EPOCHS - 2), "test_loss": [1.0, 2.0] + [None] * (EPOCHS - 2)}
    acc = [round(final_train * (e + 1) / EPOCHS, 6) for e in range(EPOCHS)]
    test = [round(best_test * min(1.0, (e + 1) / 8) - (0.001 if e >= 8 else 0), 6) for e in range(EPOCHS)]
    loss = [round(2.0 / (e + 1), 6) for e in range(EPOCHS)]
    return {"acc": acc, "test_acc": test, "loss": loss, "test_loss": [x + 0.1 for x in loss]}


def _row(value, per_seed, n_diverged=0) -> dict:
    mean = statistics.fmean(per_seed)
    se = statistics.stdev(per_seed) / math.sqrt(len(per_seed)) if len(per_seed) > 1 else 0.0
    return {"value": value, "mean": round(mean, 6), "se": round(se, 6), "n": len(per_seed),
            "n_diverged": n_diverged, "per_seed": [round(v, 6) for v in per_seed]}


def make_artifact(spec=None) -> dict:
    spec = spec or load_spec()
    runs, tables, seen = [], {}, set()
    for name, sweep in spec.sweeps.items():
        tables[name] = {m: [] for m in ("final_train_acc", "best_test_acc", "final_test_acc", "best_train_acc")}
        for value, config in zip(sweep.values, sweep.configs()):
            diverged = name == "lr" and value == 1.0
            hists = []
            for i, seed in enumerate(SEEDS):
                off = (i - 1) * SPREAD
                h = _history(TRAIN[name][value] + off, TEST[name][value] + off, diverged)
                hists.append(h)
                if (config, seed) not in seen:
                    seen.add((config, seed))
                    runs.append({"config": config.as_dict(), "seed": seed, "diverged": diverged,
                                 "diverged_epoch": 2 if diverged else None, "history": h})
            nd = len(SEEDS) if diverged else 0
            tables[name]["final_train_acc"].append(_row(value, [h["acc"][-1] for h in hists], nd))
            tables[name]["best_test_acc"].append(_row(value, [max(h["test_acc"]) for h in hists], nd))
            tables[name]["final_test_acc"].append(_row(value, [h["test_acc"][-1] for h in hists], nd))
            tables[name]["best_train_acc"].append(_row(value, [max(h["acc"]) for h in hists], nd))
    questions = {}
    for q in spec.questions:
        if q.kind == "optimum":
            sweep = spec.sweeps[q.sweep]
            table = tables[q.sweep][q.metric]
            best = max(table, key=lambda r: r["mean"])["value"]
            questions[q.id] = {"kind": "optimum", "sweep": q.sweep, "vary": sweep.vary, "metric": q.metric,
                               "z": spec.z, "grid": list(sweep.values), "table": table, "best": best,
                               "tie_set": TIE_SETS[q.id],
                               "explanation": f"tie set of {q.metric} over the {q.sweep} sweep"}
        elif q.kind == "yesno":
            questions[q.id] = {"kind": "yesno", "truth": TRUTHS[q.id],
                               "explanation": ("the test-optimal learning rate 0.03 is outside the training tie set {0.1, 0.2}"
                                               if q.id == "ex1.b" else "Spearman rho between lr/batch size and best test accuracy is 0.4 > 0"),
                               "details": {}}
        else:
            questions[q.id] = {"kind": "text"}
    return {
        "format": "labgrader-reference/1",
        "assignment": spec.assignment_id,
        "spec_sha256": spec.sha256,
        "provenance": {"device": "cpu", "device_name": "test CPU", "torch_version": "2.13.0", "dtype": "float32",
                       "data": {"kind": "synthetic", "dir": "/tmp/synthetic", "n_train": 600, "n_test": 100,
                                "sha256": {"train-images-idx3-ubyte.gz": "0" * 64}},
                       "seeds": SEEDS, "epochs": EPOCHS, "wall_time_s": 1.5, "created": "2026-11-25T00:00:00+00:00",
                       "labgrader_version": "0.1.0", "command": "labgrader reference run"},
        "sweeps": {name: {"vary": s.vary, "values": list(s.values), "fixed": dict(s.fixed)} for name, s in spec.sweeps.items()},
        "runs": runs,
        "tables": tables,
        "questions": questions,
    }


def data_folder(path: Path) -> Path:
    """The four Fashion-MNIST files, tiny and synthetic: `grade` and `check` refuse a data dir without
    them before any notebook runs, even when the executor is a fake."""
    from reference.synth import write_synthetic

    return write_synthetic(path, n_train=20, n_test=10, seed=0)


def write_artifact(path: Path) -> Path:
    path.write_text(json.dumps(make_artifact()), encoding="utf-8")
    return path


def reference_object(data: dict | None = None):
    from grader.assessment.reference_io import Reference

    return Reference(Path("test-reference.json"), "f" * 64, data or make_artifact(), demo=False)


# a fake executor -------------------------------------------------------------------------------

RIGHT = {
    "7b_ex1.json": {"a": "0.1", "b": "No: the test optimum 0.03 is lower; at 0.1 the model starts to overfit",
                    "c": "32", "d": "Each update takes a bigger step, and the gradient noise helps escape saddle points."},
    "7b_ex2.json": {"a": "0.03", "b": 64, "c": "Yes, more noise regularizes the model and it generalizes better",
                    "d": "SGD noise is a random perturbation of the weights, a regularizer like dropout's noise."},
}


@dataclass
class FakeExecResult:
    status: str
    reason: str
    cell: int | None
    executed: str | None
    duration_s: float
    reported_runs: str | None = None


def notebook(path: Path, fake: dict) -> Path:
    """A tiny notebook whose metadata tells the fake executor what to do."""
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": "print(1)", "outputs": [], "execution_count": None}],
          "metadata": {"fake": fake}, "nbformat": 4, "nbformat_minor": 5}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


def fake_execute_module(calls: list) -> types.ModuleType:
    """grader.execution.execute as its contract says, with outcomes read from the notebook's metadata."""
    mod = types.ModuleType("grader.execution.execute")

    def prepare_workdir(submission, workdir, *, answer_files):
        submission, workdir = Path(submission), Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        if submission.is_file():
            shutil.copy(submission, workdir / submission.name)
        else:
            shutil.copytree(submission, workdir, dirs_exist_ok=True)
        for name in answer_files:
            if (workdir / name).exists():
                (workdir / "submitted-answers").mkdir(exist_ok=True)
                (workdir / name).rename(workdir / "submitted-answers" / name)
        notebooks = sorted(workdir.glob("*.ipynb"))
        if not notebooks:
            from grader.common.errors import UserError
            raise UserError("no notebook (.ipynb) in the submission")
        return notebooks[0]

    def execute_notebook(nb_path, workdir, *, limits, data_dir, preamble, sandbox=True, slot=0, seed=0, threads=2, stop=None,
                         train_socket=None, data_cache=None, font_cache=None, warn_unsandboxed=True):
        nb_path, workdir = Path(nb_path), Path(workdir)
        calls.append({"student": workdir.name, "notebook": nb_path.name, "slot": slot, "data_dir": data_dir, "preamble": preamble,
                      "sandbox": sandbox, "limits": limits, "data_cache": data_cache, "font_cache": font_cache,
                      "warn_unsandboxed": warn_unsandboxed})
        fake = json.loads(nb_path.read_text())["metadata"]["fake"]
        if fake.get("raise"):
            raise RuntimeError(fake["raise"])
        if fake.get("interrupt"):
            raise KeyboardInterrupt
        for name, answers in fake.get("write", {}).items():
            text = answers if isinstance(answers, str) else json.dumps(answers)
            (workdir / name).write_text(text, encoding="utf-8")
        executed = workdir / (nb_path.stem + ".executed.ipynb")
        shutil.copy(nb_path, executed)
        return FakeExecResult(fake.get("status", "ok"), fake.get("reason", ""), fake.get("cell"), str(executed), 0.01,
                              fake.get("reported_runs"))

    def remove_workdir(path):
        shutil.rmtree(path, ignore_errors=True)
        return not Path(path).exists()

    mod.prepare_workdir = prepare_workdir
    mod.execute_notebook = execute_notebook
    mod.remove_workdir = remove_workdir
    return mod


def grade_json(*args: str) -> tuple[int, dict]:
    """Run `labgrader grade ARGS --json` in-process; -> its exit code and JSON summary ({} when it failed)."""
    import io

    from grader.cli import main

    buf = io.StringIO()
    old, sys.stdout = sys.stdout, buf
    try:
        code = main(["grade", *args, "--json"])
    finally:
        sys.stdout = old
    return code, json.loads(buf.getvalue()) if code == 0 else {}


def install_fake_executor(monkeypatch) -> list:
    """Notebooks "run" by reading their fake metadata; no kernel trains, so no training service starts."""
    calls: list = []
    monkeypatch.setitem(sys.modules, "grader.execution.execute", fake_execute_module(calls))
    import grader.execution
    import grader.grade

    monkeypatch.setattr(grader.grade, "_service_options", lambda args: None)

    monkeypatch.setattr(grader.execution, "execute", sys.modules["grader.execution.execute"], raising=False)
    return calls

"""`labgrader reference show REF`: each question's optimum and tie set, the sweeps' tables, curves.

Reads only the artifact (no torch), so it is instant; every number is printed with where it
came from (device, data kind, seeds, epochs).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from grader.common.errors import UserError
from reference.analysis import VARY_NAMES, config_of, fmt_set, fmt_value, tie_set
from reference.artifact import read_artifact
from reference.spec import METRICS, Config


def provenance_line(ref: dict) -> str:
    p = ref["provenance"]
    d = p["data"]
    return (f"{p['device']} ({p['device_name']}), {d['kind']} data ({d['n_train']} train / {d['n_test']} test), "
            f"seeds {p['seeds']}, {p['epochs']} epochs, {p['dtype']}, torch {p['torch_version']}, "
            f"created {p['created']}")




def _z(ref: dict) -> float:
    return next((q["z"] for q in ref["questions"].values() if q["kind"] == "optimum"), 2.0)


def question_rows(ref: dict) -> list[dict]:
    out = []
    for qid, q in ref["questions"].items():
        row = {"id": qid, "kind": q["kind"]}
        if q["kind"] == "optimum":
            row.update(sweep=q["sweep"], vary=q["vary"], metric=q["metric"], best=q["best"], tie_set=q["tie_set"],
                       explanation=q["explanation"])
        elif q["kind"] == "yesno":
            row.update(truth=q["truth"], explanation=q["explanation"])
        out.append(row)
    return out


def _questions_text(ref: dict) -> list[str]:
    lines = ["Expected answers", f"{'question':<9} {'kind':<8} {'sweep':<9} {'metric':<16} {'best':>7}  tie set / truth"]
    for r in question_rows(ref):
        if r["kind"] == "optimum":
            lines.append(f"{r['id']:<9} {'optimum':<8} {r['sweep']:<9} {r['metric']:<16} {fmt_value(r['best']):>7}  {fmt_set(r['tie_set'])}")
        elif r["kind"] == "yesno":
            lines.append(f"{r['id']:<9} {'yes/no':<8} {'':<9} {'':<16} {'':>7}  {'yes' if r['truth'] else 'no'}: {r['explanation']}")
        else:
            lines.append(f"{r['id']:<9} {'text':<8} {'':<9} {'':<16} {'':>7}  (free text: rubric, manual review)")
    return lines


def _sweep_text(ref: dict, name: str, z: float) -> list[str]:
    sweep = ref["sweeps"][name]
    tables = ref["tables"][name]
    fixed = ", ".join(f"{k}={fmt_value(v)}" for k, v in sweep["fixed"].items())
    seeds = len(ref["provenance"]["seeds"])
    lines = [f"Sweep {name}: {VARY_NAMES.get(sweep['vary'], sweep['vary'])} ({fixed}); mean ± SE over {seeds} seeds, "
             f"* = in the tie set of that column (z={z:g})"]
    metrics = [m for m in METRICS if m in tables]
    lines.append(f"{sweep['vary']:>10} " + " ".join(f"{m:>18}" for m in metrics) + "  diverged")
    ties = {m: tie_set(tables[m], z)[1] for m in metrics}
    for i, value in enumerate(sweep["values"]):
        cells = []
        for m in metrics:
            row = tables[m][i]
            mark = "*" if row["value"] in ties[m] else " "
            cells.append(f"{row['mean']:.4f} ± {row['se']:.4f}{mark}".rjust(18))
        n_div = tables[metrics[0]][i]["n_diverged"] if metrics else 0
        lines.append(f"{fmt_value(value):>10} " + " ".join(cells) + f"  {n_div}/{tables[metrics[0]][i]['n']}")
    return lines


def curves(ref: dict, name: str) -> dict:
    """{value: {"acc": [...], "test_acc": [...]}}: seed means per epoch of the sweep's runs."""
    sweep = ref["sweeps"][name]
    out = {}
    for value in sweep["values"]:
        params = dict(sweep["fixed"], **{sweep["vary"]: value})
        want = Config(float(params["lr"]), int(params["batch_size"]), float(params["momentum"]))
        runs = [r for r in ref["runs"] if config_of(r) == want]
        if not runs:
            continue
        out[value] = {k: [sum(r["history"][k][e] for r in runs) / len(runs) for e in range(len(runs[0]["history"][k]))]
                      for k in ("acc", "test_acc")}
    return out


def plot_sweeps(ref: dict, folder: str | Path) -> list[Path]:
    """One PNG per sweep: seed-mean train and test accuracy per grid value vs epoch."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--plot {folder}: cannot create the folder: {e.strerror or e}")
    p = ref["provenance"]
    where = f"{p['data']['kind']} data, {len(p['seeds'])} seeds, {p['device']}"
    written = []
    for name, sweep in ref["sweeps"].items():
        fig = Figure(figsize=(11, 4.2), dpi=100)
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 2, sharey=True)
        found = curves(ref, name)
        colors = colormaps["viridis"].resampled(max(2, len(found)))
        for i, (value, c) in enumerate(found.items()):
            epochs = range(1, len(c["acc"]) + 1)
            label = f"{sweep['vary']}={fmt_value(value)}"
            axes[0].plot(epochs, c["acc"], marker=".", color=colors(i), label=label)
            axes[1].plot(epochs, c["test_acc"], marker=".", color=colors(i), label=label)
        for ax, what in zip(axes, ("training accuracy (acc)", "test accuracy (test_acc)")):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_title(what, fontsize=10)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("seed-mean accuracy")
        axes[1].legend(fontsize=8, loc="lower right")
        fixed = ", ".join(f"{k}={fmt_value(v)}" for k, v in sweep["fixed"].items())
        fig.suptitle(f"Sweep {name}: {VARY_NAMES.get(sweep['vary'], sweep['vary'])} ({fixed}) - {where}")
        fig.tight_layout()
        path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.png"
        try:
            fig.savefig(path, format="png")
        except OSError as e:
            raise UserError(f"cannot write {path}: {e.strerror or e}")
        written.append(path)
    return written


def show_command(args) -> int:
    ref = read_artifact(args.ref)
    plots = plot_sweeps(ref, args.plot) if getattr(args, "plot", None) else []
    if getattr(args, "json", False):
        print(json.dumps({"ref": str(args.ref), "provenance": ref["provenance"], "questions": question_rows(ref),
                          "tables": ref["tables"], "plots": [str(p) for p in plots]}))
        return 0
    z = _z(ref)
    lines = [f"{args.ref}: lab {ref['assignment']} reference, {len(ref['runs'])} runs on {provenance_line(ref)}", ""]
    lines += _questions_text(ref)
    for name in ref["sweeps"]:
        lines += [""] + _sweep_text(ref, name, z)
    if plots:
        lines += ["", "learning curves: " + ", ".join(str(p) for p in plots)]
    print("\n".join(lines))
    return 0

"""The class report's evidence part: per sweep, how many students the training service trained each
grid value for (full epoch count), and per question with evidence, how often an answer agrees with
the student's own runs and how many students ran the whole grid.

Only results with a runs record count (a result graded without one, --no-execute, has none), and only
`service` runs: what a notebook reported itself is no evidence. class_evidence gives summary.json's
numbers; coverage_part turns them into the page's cells (each with its JSON path) and charts.
"""

from __future__ import annotations

from grader.reports.htmlkit import Figure, new_figure, num, png_data_uri
from grader.reports.ownruns import grid, sweep_runs
from grader.reports.refcurves import VARY_WORDS


def class_evidence(results: list[dict], spec) -> dict | None:
    """summary.json's "evidence"; None when no result has a runs record."""
    recorded = [r for r in results if isinstance(r.get("runs"), list)]
    if not recorded:
        return None
    return {
        "students": len(results),
        "with_runs": len(recorded),
        "epochs": spec.epochs,
        "sweeps": {name: {"vary": spec.sweeps[name].vary, "grid": sweep_coverage(recorded, spec, name)}
                   for name in asked_sweeps(spec)},
        "questions": {q.id: agreement(recorded, q.id) for q in spec.questions
                      if any(_evidence(r, q.id) is not None for r in recorded)},
    }


def asked_sweeps(spec) -> list[str]:
    """The sweeps some question reads, in spec order (a sweep no question asks about is no evidence)."""
    named = {s for q in spec.questions for s in (*q.sweeps, q.sweep) if s}
    return [name for name in spec.sweeps if name in named]


def sweep_coverage(recorded: list[dict], spec, name: str) -> list[dict]:
    """Per grid value, the number of students with a service run of it (full epochs, the sweep's fixed values)."""
    counts = [0] * len(grid(spec, name))
    for result in recorded:
        service = [r for r in result["runs"] if isinstance(r, dict) and r.get("source") == "service"]
        ran = sweep_runs(service, spec, name)
        for i, value in enumerate(grid(spec, name)):
            counts[i] += value in ran
    return [{"value": v, "students": c} for v, c in zip(grid(spec, name), counts)]


def agreement(recorded: list[dict], qid: str) -> dict:
    """with_evidence students; decided: agrees is true or false; agree: true; share = agree / decided; complete runs."""
    found = [e for e in (_evidence(r, qid) for r in recorded) if e is not None]
    decided = [e for e in found if isinstance(e.get("agrees"), bool)]
    agree = sum(e["agrees"] is True for e in decided)
    return {"with_evidence": len(found), "decided": len(decided), "agree": agree,
            "share": round(agree / len(decided), 3) if decided else None,
            "complete": sum(e.get("complete") is True for e in found)}


def coverage_part(ev: dict | None) -> dict | None:
    """What the page shows of summary["evidence"]: number cells beside their JSON paths, one chart per sweep."""
    if ev is None:
        return None
    key = "evidence"
    return {
        "students": _cell(ev["with_runs"], f"{key}/with_runs"),
        "of": _cell(ev["students"], f"{key}/students"),
        "epochs": num(ev["epochs"]),
        "sweeps": [{"name": name, "vary": VARY_WORDS.get(s["vary"], s["vary"]),
                    "figure": Figure(_coverage_png(name, s, ev), f"students per {s['vary']} of the {name} sweep",
                                     f"Students whose own runs include each grid value (training service, "
                                     f"{num(ev['epochs'])} epochs); the dashed line marks the {num(ev['with_runs'])} "
                                     f"students with a runs record."),
                    "rows": [{"value": num(g["value"]), "cell": _cell(g["students"], f"{key}/sweeps/{name}/grid/{i}/students")}
                             for i, g in enumerate(s["grid"])]}
                   for name, s in ev["sweeps"].items()],
        "questions": [{"id": qid, "cells": [_cell(a[k], f"{key}/questions/{qid}/{k}")
                                            for k in ("with_evidence", "decided", "agree", "share", "complete")]}
                      for qid, a in ev["questions"].items()],
    }


def _evidence(result: dict, qid: str) -> dict | None:
    entry = (result.get("questions") or {}).get(qid)
    ev = entry.get("evidence") if isinstance(entry, dict) else None
    return ev if isinstance(ev, dict) else None


def _cell(value, key: str) -> dict:
    return {"text": num(value), "key": key}


def _coverage_png(name: str, sweep: dict, ev: dict) -> str:
    rows = sweep["grid"]
    fig = new_figure(max(4.0, 0.55 * len(rows) + 1.6), 2.8)
    ax = fig.subplots()
    counts = [g["students"] for g in rows]
    ax.bar(range(len(rows)), counts, color="#1565c0", edgecolor="white")
    ax.axhline(ev["with_runs"], color="#9e9e9e", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(rows)), [num(g["value"]) for g in rows])
    ax.set_xlabel(VARY_WORDS.get(sweep["vary"], sweep["vary"]))
    ax.set_ylabel("students who ran it")
    ax.set_ylim(0, max(ev["with_runs"], 1) * 1.12)
    ax.set_title(f"{name} sweep", fontsize=10)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(axis="y", alpha=0.3)
    return png_data_uri(fig)

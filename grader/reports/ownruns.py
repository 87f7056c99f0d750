"""The feedback's "Your own runs" section as plain data: per sweep a question's evidence uses, the
student's own metric per grid value beside the reference's, their own curves over the reference's
seed band, and in words what those runs support per question.

It reads result["runs"], result["runs_summary"] and each question's "evidence" (their shape:
schemas/results.schema.json); a result without a runs record (absent or null) has no section, so its
pages stay as they were. With hidden answers nothing of the reference is shown: no mean, no band.
Whatever a notebook reported about its own runs is untrusted text, passed on for the templates to
escape.
"""

from __future__ import annotations

import math
from typing import Any

from grader.assessment.evidence import sweep_configs
from grader.common.text import one_line
from grader.reports.htmlkit import num
from grader.reports.refcurves import (CURVE_WORDS, METRIC_CURVE, METRIC_WORDS, VARY_WORDS, artifact, same, seed_band, student_choice)
from reference.spec import hyperparameter_value

VARY_PLURAL = {"lr": "learning rates", "batch_size": "batch sizes", "momentum": "momentum values"}
SOURCES = ("service", "notebook-reported")
CONFIG_KEYS = ("lr", "batch_size", "momentum", "hidden", "optimizer")
MAX_TEXT = 200


def evidence_section(result: dict, spec, reference, *, hidden: bool) -> dict | None:
    """What the section shows; None for a result without a runs record."""
    runs = result.get("runs")
    if not isinstance(runs, list):
        return None
    runs = [r for r in runs if isinstance(r, dict)]
    summary = result.get("runs_summary") if isinstance(result.get("runs_summary"), dict) else {}
    source = summary.get("evidence") if summary.get("evidence") in SOURCES else None
    evidence_runs = [r for r in runs if source and r.get("source") == source]
    asked = evidence_questions(result, spec)
    only_reported = not evidence_runs and any(r.get("source") == "notebook-reported" for r in runs)
    return {
        "intro": _intro(evidence_runs, source, spec),
        "sentences": _merged([(q.id, support_sentence(q, entry, ev, spec, only_reported=only_reported))
                               for q, entry, ev in asked]),
        "sweeps": [sweep_part(name, asked, evidence_runs, spec, reference, hidden=hidden)
                   for name in sweeps_in_use(asked, spec) if _any_tried(asked, name)],
        "reported": [reported_row(r) for r in runs if r.get("source") != source],
        "note": one_line(summary["note"], MAX_TEXT) if summary.get("note") else "",
    }


def evidence_questions(result: dict, spec) -> list[tuple]:
    """(question, its result entry, its evidence) for each question with evidence, in spec order."""
    entries = result.get("questions") or {}
    out = []
    for q in spec.questions:
        entry = entries.get(q.id)
        if isinstance(entry, dict) and isinstance(entry.get("evidence"), dict):
            out.append((q, entry, entry["evidence"]))
    return out


def sweeps_of(q, ev: dict) -> list[str]:
    """The sweeps the question's evidence covers, as the evidence names them, else as the spec does."""
    named = ev.get("sweeps") if isinstance(ev.get("sweeps"), list) else None
    return [str(s) for s in named or list(q.sweeps) or ([q.sweep] if q.sweep else [])]


def sweeps_in_use(asked: list[tuple], spec) -> list[str]:
    used = {s for q, _, ev in asked for s in sweeps_of(q, ev)}
    return [name for name in spec.sweeps if name in used]


def grid(spec, name: str) -> list:
    sweep = spec.sweeps[name]
    return [hyperparameter_value(sweep.vary, v) for v in sweep.values]


def sweep_runs(runs: list[dict], spec, name: str) -> dict:
    """grid value -> the run of this sweep's configuration that counts as evidence (evidence.sweep_configs)."""
    found = sweep_configs(spec, runs)
    return {v: found[c] for v, c in zip(grid(spec, name), spec.sweeps[name].configs()) if c in found}


def sweep_part(name: str, asked: list[tuple], runs: list[dict], spec, reference, *, hidden: bool) -> dict:
    """One sweep: its table (rows), what its figure draws (plot), how many grid values were run."""
    vary = spec.sweeps[name].vary
    on = [(q, entry, ev) for q, entry, ev in asked if name in sweeps_of(q, ev)]
    columns = metric_columns(on)
    values = grid(spec, name)
    marks = answer_marks(on, name, values, spec)
    own = sweep_runs(runs, spec, name)
    return {
        "name": name,
        "vary": VARY_WORDS.get(vary, vary),
        "columns": [{"words": METRIC_WORDS.get(c["metric"], c["metric"]), "qids": ", ".join(c["qids"])}
                    for c in columns],
        "hidden": hidden,
        "rows": table_rows(name, values, columns, on, reference, marks, hidden=hidden),
        "tried": f"{len(own)} of {len(values)}",
        "plot": sweep_plot(name, values, columns, own, spec, reference, marks, hidden=hidden),
    }


def metric_columns(on: list[tuple]) -> list[dict]:
    """One column per metric the sweep's questions read, naming the questions."""
    columns: dict[str, list[str]] = {}
    for q, _, ev in on:
        columns.setdefault(str(ev.get("metric") or q.metric or "final_train_acc"), []).append(q.id)
    return [{"metric": m, "qids": qids} for m, qids in columns.items()]


def answer_marks(on: list[tuple], name: str, values: list, spec) -> dict[int, list[str]]:
    """grid index -> the optimum questions whose (snapped) answer is that value, for questions whose first sweep this is."""
    marks: dict[int, list[str]] = {}
    for q, entry, ev in on:
        if q.kind != "optimum" or sweeps_of(q, ev)[:1] != [name]:
            continue
        choice = student_choice(entry.get("answer"), values, spec.snap)
        if choice is not None:
            index = next(i for i, v in enumerate(values) if same(v, choice["grid_value"]))
            marks.setdefault(index, []).append(q.id)
    return marks


def table_rows(name: str, values: list, columns: list[dict], on: list[tuple], reference, marks: dict,
               *, hidden: bool) -> list[dict]:
    """Per grid value: the student's own metric per column ("not run", "diverged"), the reference's
    seed mean ± SE beside it unless hidden, and the questions answered with this value."""
    own = {c["metric"]: own_values(on, name, c["metric"]) for c in columns}
    ref = {} if hidden else {c["metric"]: reference_rows(reference, name, c["metric"]) for c in columns}
    rows = []
    for i, value in enumerate(values):
        cells = []
        for c in columns:
            cell = _own_cell(own[c["metric"]], value)
            if not hidden:
                cell["ref"] = _ref_cell(ref[c["metric"]], value)
            cells.append(cell)
        rows.append({"value": num(value), "answer": ", ".join(marks.get(i, [])), "cells": cells})
    return rows


def own_values(on: list[tuple], name: str, metric: str) -> dict:
    """grid value as f"{v:g}" -> the student's own metric (None: diverged), from the first question that has it."""
    for q, _, ev in on:
        if str(ev.get("metric") or q.metric) != metric:
            continue
        part = (ev.get("by_sweep") or {}).get(name)
        if isinstance(part, dict) and isinstance(part.get("own_metric"), dict):
            return part["own_metric"]
        if isinstance(ev.get("own_metric"), dict) and sweeps_of(q, ev)[:1] == [name]:
            return ev["own_metric"]
    return {}


def reference_rows(reference, name: str, metric: str) -> list[dict]:
    """The artifact's rows (value, mean, se) for this sweep and metric: a question's table, else the sweep's."""
    for qref in (artifact(reference).get("questions") or {}).values():
        if qref.get("sweep") == name and qref.get("metric") == metric and qref.get("table"):
            return qref["table"]
    return ((artifact(reference).get("tables") or {}).get(name) or {}).get(metric) or []


def sweep_plot(name: str, values: list, columns: list[dict], own: dict, spec, reference, marks: dict,
               *, hidden: bool) -> dict | None:
    """What the sweep's figure draws: per curve (acc, test_acc) the student's own curves, and unless
    hidden the reference's seed band for the same grid values, and the answers of the questions that
    read that curve; None when no run has a history."""
    key_of = {qid: METRIC_CURVE.get(c["metric"], "acc") for c in columns for qid in c["qids"]}
    panels = []
    for key in dict.fromkeys(key_of.values()):
        curves = [[v, _curve(own[v], key, spec.epochs)] for v in values if v in own]
        curves = [[v, c] for v, c in curves if any(x is not None for x in c)]
        band = {} if hidden else seed_band(reference, spec, name, key, [v for v, _ in curves])
        mine = [[values[i], ", ".join(q for q in qids if key_of.get(q) == key)] for i, qids in sorted(marks.items())]
        panels.append({"key": key, "words": CURVE_WORDS.get(key, key), "own": curves,
                       "band": [[v, lo, hi] for v, (lo, hi) in band.items()], "answers": [m for m in mine if m[1]]})
    if not any(p["own"] for p in panels):
        return None
    return {"sweep": name, "vary": spec.sweeps[name].vary, "grid": values, "panels": panels,
            "answers": [[values[i], ", ".join(qids)] for i, qids in sorted(marks.items())],
            "diverged": [v for v in values if v in own and own[v].get("served") == "diverged"]}


def support_sentence(q, entry: dict, ev: dict, spec, *, only_reported: bool) -> str:
    """What the student's own runs say about this question's answer, in one or two sentences."""
    names = [s for s in sweeps_of(q, ev) if s in spec.sweeps]
    tried = {s: _tried(ev, s) for s in names}
    if not any(tried.values()):
        if only_reported:
            return "No runs were recorded (trained in the notebook, not by the training service): not evidence."
        what = " or ".join(f"the {len(grid(spec, s))} {_plural(spec, s)}" for s in names) or "this sweep"
        return f"Your notebook trained none of {what} with the full {spec.epochs} epochs: no runs of yours decide this."
    runs_words = "Your runs (" + "; ".join(_coverage(spec, s, len(tried[s])) for s in names) + ")"
    if q.kind == "yesno":
        return _yesno_sentence(ev, runs_words)
    return _optimum_sentence(entry, ev, spec, names[0], runs_words)


def reported_row(run: dict) -> dict:
    """A run the notebook reported itself (or any run that is not evidence), every field as text."""
    config = run.get("config") if isinstance(run.get("config"), dict) else {}
    shown = [f"{k}={_value_text(config[k])}" for k in CONFIG_KEYS if config.get(k) is not None]
    shown += [f"{_value_text(k)}={_value_text(v)}" for k, v in config.items() if k not in CONFIG_KEYS and v is not None]
    return {"config": one_line(", ".join(shown) or "unknown", MAX_TEXT), "epochs": _value_text(run.get("epochs")),
            "served": _value_text(run.get("served")), "calls": _value_text(run.get("calls")),
            "note": one_line(run["note"], MAX_TEXT) if run.get("note") else ""}


def _merged(sentences: list[tuple[str, str]]) -> list[dict]:
    """Questions that get the same sentence share one line."""
    out: dict[str, list[str]] = {}
    for qid, text in sentences:
        out.setdefault(text, []).append(qid)
    return [{"qid": ", ".join(qids), "text": text} for text, qids in out.items()]


def _any_tried(asked: list[tuple], name: str) -> bool:
    return any(_tried(ev, name) for _, _, ev in asked)


# words --------------------------------------------------------------------------------------------

def _intro(evidence_runs: list[dict], source: str | None, spec) -> str:
    if source is None:
        return ("No training service ran when your notebook was graded, so no run of yours counts as evidence: "
                "your answers are judged by the reference alone.")
    calls = sum(r["calls"] for r in evidence_runs if _number(r.get("calls")))
    who = "The training service" if source == "service" else "Your notebook"
    if not evidence_runs:
        return f"{who} recorded no run of yours."
    text = (f"{who} recorded {len(evidence_runs)} distinct runs of yours"
            + (f" ({num(calls)} calls of train())" if calls else "") + ". ")
    return text + (f"Runs of a sweep's configuration with the full {spec.epochs} epochs are the evidence below; "
                   "a configuration run more than once counts once, its histories averaged.")


def _optimum_sentence(entry: dict, ev: dict, spec, name: str, runs_words: str) -> str:
    values = grid(spec, name)
    best = ev.get("own_best")
    points = f"{runs_words} point to {num(hyperparameter_value(spec.sweeps[name].vary, best))}" \
        if _number(best) else f"{runs_words} all diverged: they point to no value"
    choice = student_choice(entry.get("answer"), values, spec.snap)
    if choice is None:
        return f"{points}; you gave no numeric answer to compare with them."
    answer = num(choice["grid_value"]) + (f" (your {num(choice['value'])} on the grid)" if choice["snapped"] else "")
    if ev.get("answer_tried") is False:
        return f"You answered {answer}, which your notebook never trained. {points}."
    if ev.get("agrees") is True:
        return f"{points}; your answer {answer} agrees with them."
    if ev.get("agrees") is False:
        return f"{points}; your answer {answer} does not agree with them."
    return f"{points}."


def _yesno_sentence(ev: dict, runs_words: str) -> str:
    truth = ev.get("own_truth")
    if not isinstance(truth, bool):
        return f"{runs_words} do not decide this question" + ("." if ev.get("complete") else
                                                               ": they leave out values of the grid.")
    said = f"{runs_words} say {'yes' if truth else 'no'}"
    if ev.get("agrees") is True:
        return f"{said}; your answer agrees with them."
    if ev.get("agrees") is False:
        return f"{said}; your answer does not agree with them."
    return f"{said}; your answer could not be read as yes or no."


def _coverage(spec, name: str, tried: int) -> str:
    n = len(grid(spec, name))
    return f"all {n} {_plural(spec, name)}" if tried >= n else f"{tried} of {n} {_plural(spec, name)}"


def _plural(spec, name: str) -> str:
    vary = spec.sweeps[name].vary
    return VARY_PLURAL.get(vary, f"values of {vary}")


def _tried(ev: dict, name: str) -> list:
    part = (ev.get("by_sweep") or {}).get(name)
    tried = part.get("tried") if isinstance(part, dict) else None
    if tried is None and (ev.get("sweeps") or [name])[0] == name:
        tried = ev.get("tried")
    return list(tried) if isinstance(tried, list) else []


# cells and values ---------------------------------------------------------------------------------

def _own_cell(own: dict, value) -> dict:
    key = f"{value:g}"
    if key not in own:
        return {"own": "not run", "css": "not-run"}
    if not _number(own[key]):
        return {"own": "diverged", "css": "diverged"}
    return {"own": f"{float(own[key]):.4f}", "css": ""}


def _ref_cell(rows: list[dict], value) -> str:
    row = next((r for r in rows if _number(r.get("value")) and same(r["value"], value)), None)
    if row is None or not _number(row.get("mean")):
        return "—"
    if row.get("n_diverged") and row.get("n_diverged") == row.get("n"):
        return "diverged"
    return f"{float(row['mean']):.4f} ± {float(row.get('se') or 0.0):.4f}"


def _curve(run: dict, key: str, epochs: int) -> list:
    history = run.get("history") if isinstance(run.get("history"), dict) else {}
    curve = history.get(key) if isinstance(history.get(key), list) else []
    return [float(x) if _number(x) else None for x in curve[:epochs]]


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _value_text(x: Any) -> str:
    if x is None:
        return "—"
    return num(x) if _number(x) or isinstance(x, bool) else one_line(x, 60)

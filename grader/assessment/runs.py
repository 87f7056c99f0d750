"""A student's runs record: what the training service trained for the notebook, and what the notebook says it
trained itself, merged into the `runs` list of results.json.

The service's entries (grader/service/server.py) are trusted: the grader made those runs. The kit's file
(reference/kit_report.py) is the notebook's own word and stays "notebook-reported" whatever it claims,
so a forged file can add entries but never change a service run. A configuration run more than once by
the same source counts once, its histories averaged.
"""

from __future__ import annotations

import json
import math

from grader.common.names import display
from grader.common.text import one_line
from reference.kit_report import HISTORY_KEYS

CONFIG_KEYS = ("lr", "batch_size", "momentum", "hidden", "optimizer")
SERVICE, REPORTED = "service", "notebook-reported"
MAX_REPORTED = 1000
MAX_EPOCHS = 1000
NOTE_CHARS = 200


def parse_reported(text: str | None) -> tuple[list[dict], int]:
    """The kit's runs file -> (notebook-reported entries, how many lines could not be read)."""
    if not text:
        return [], 0
    runs, bad = [], 0
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    elif lines:
        lines.pop()
        bad += 1
    for line in lines:
        if len(runs) >= MAX_REPORTED:
            bad += 1
            continue
        entry = _reported_entry(line)
        if entry is None:
            bad += 1
        else:
            runs.append(entry)
    return runs, bad


def _reported_entry(line: str) -> dict | None:
    try:
        raw = json.loads(line)
    except ValueError:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict) or not isinstance(raw.get("history"), dict):
        return None
    c = raw["config"]
    config = {"lr": _number(c.get("lr")), "batch_size": _integer(c.get("batch_size")),
              "momentum": _number(c.get("momentum")), "hidden": _integer(c.get("hidden")),
              "optimizer": _text(c.get("optimizer"), 40)}
    epochs = _integer(raw.get("epochs"))
    history = {}
    for k in HISTORY_KEYS:
        values = raw["history"].get(k, [])
        if not isinstance(values, list) or len(values) > MAX_EPOCHS:
            return None
        history[k] = [_number(v) for v in values]
    note = raw.get("note")
    return {"config": config, "epochs": epochs, "source": REPORTED, "served": "notebook", "calls": 1,
            "history": history, "note": _text(note, NOTE_CHARS)}


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _integer(v) -> int | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v != int(v) or abs(v) > 1 << 31:
        return None
    return int(v)


def _text(v, most: int) -> str | None:
    return display(one_line(v, most)) if isinstance(v, str) and v else None


def runs_record(service: list[dict] | None, reported_text: str | None) -> tuple[list[dict] | None, dict]:
    """-> (the merged `runs` list, or None when nothing was recorded at all; `runs_summary`).

    service: the session's record, or None when no training service served this notebook. Evidence
    comes from service runs only, and not at all when the service did not serve the whole notebook
    (none ran, or it failed mid-way and runs went back to the sandbox)."""
    reported, bad = parse_reported(reported_text)
    if service is None and not reported and not bad:
        return None, {"service": 0, "notebook_reported": 0, "calls": 0, "evidence": None,
                      "note": "no runs were recorded: no training service served this notebook"}
    served = [dict(r, calls=1, note=None) for r in (service or [])]
    reported = _drop_retrained(served, reported)
    runs = merge(served + reported)
    failed = any(r["served"] == "failed" for r in served)
    notes = []
    if bad:
        notes.append(f"{bad} line(s) of the notebook's runs file could not be read")
    n_reported = sum(1 for r in runs if r["source"] == REPORTED)
    if service is None or failed:
        evidence = None
        notes.append("the training service failed during this notebook, so no evidence rule applies" if failed
                     else "no training service served this notebook, so no evidence rule applies")
    else:
        evidence = SERVICE
        if n_reported:
            notes.append(f"{n_reported} run(s) reported by the notebook itself are shown but are not evidence: "
                         "only runs the training service made count")
        custom = sum(1 for r in runs if r.get("init") == "custom")
        if custom:
            notes.append(f"{custom} run(s) started from weights that are not PyTorch's default initialisation (as "
                         "build_mlp makes them) are shown but are not evidence")
    summary = {"service": sum(1 for r in runs if r["source"] == SERVICE), "notebook_reported": n_reported,
               "calls": sum(r["calls"] for r in runs), "evidence": evidence, "note": "; ".join(notes) or None}
    return runs, summary


def _drop_retrained(service: list[dict], reported: list[dict]) -> list[dict]:
    """A run the service saw diverge (or could not train) is retrained by the notebook, which reports it too:
    the service's entry stands for that call, so one matching report per such entry goes."""
    owed = [_call(r) for r in service if r["served"] in ("diverged", "failed")]
    kept = []
    for r in reported:
        k = _call(r)
        if k in owed:
            owed.remove(k)
        else:
            kept.append(r)
    return kept


def _call(run: dict) -> tuple:
    return (*(run["config"].get(k) for k in CONFIG_KEYS), run["epochs"])


def _key(run: dict) -> tuple:
    c = run["config"]
    return (run["source"] if run["source"] == REPORTED else SERVICE, *(c.get(k) for k in CONFIG_KEYS),
            run["epochs"], run["served"] in ("diverged", "failed"), run.get("init"))


def merge(runs: list[dict]) -> list[dict]:
    """Entries of the same source, config and epochs -> one, in first-seen order, histories averaged per epoch."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault(_key(r), []).append(r)
    out = []
    for same in groups.values():
        first = same[0]
        calls = sum(r.get("calls", 1) for r in same)
        out.append({**first, "calls": calls, "history": _average([r["history"] for r in same])})
    return out


def _average(histories: list[dict | None]) -> dict | None:
    real = [h for h in histories if h is not None]
    if not real:
        return None
    if len(real) == 1:
        return real[0]
    out = {}
    for k in HISTORY_KEYS:
        columns = [h.get(k) or [] for h in real]
        n = min(len(c) for c in columns)
        out[k] = [None if any(c[i] is None for c in columns) else math.fsum(c[i] for c in columns) / len(columns)
                  for i in range(n)]
    return out

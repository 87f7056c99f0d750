"""What a student's own runs say under `check`: the lab kit's report of the runs the notebook trained.

Under `check` the kit's report is the evidence (the student's own code on the student's own machine,
so nobody's grade depends on it); under `grade` only the training service's runs count. The
evidence itself comes from grader/assessment/evidence.py, as `grade` computes it; this module adds
what a student reads: which runs count and why the others do not, grid coverage, and whether each
answer agrees with the student's own runs. Everything returned is plain JSON.
"""

from __future__ import annotations

from grader.assessment.evidence import MIN_YESNO_POINTS, counted_runs, optimum_evidence, yesno_evidence
from grader.assessment.runs import REPORTED, merge, parse_reported
from grader.assessment.score import HYPERPARAMETER_WORDS, METRIC_WORDS, snap

PLURAL_WORDS = {"lr": "learning rates", "batch_size": "batch sizes", "momentum": "momentum values"}
NO_RUNS_FILE = "no runs: a JSON file checked alone carries none; check the notebook to compare your answers with your own runs"
NO_RUNS_FOLDER = ("no runs: answer files checked alone carry none; check the notebook to compare your answers "
                  "with your own runs")
DECIDES = "the course's reference decides the points"
MAX_LISTED = 5


def runs_view(spec, reported_text: str | None) -> tuple[dict, dict]:
    """The kit's runs file -> (plain summary for the output, {Config: run} that count as evidence)."""
    entries, unreadable = parse_reported(reported_text)
    runs = merge(entries)
    counted = counted_runs(spec, runs, REPORTED)
    used = {id(r) for r in counted.values()}
    others = [r for r in runs if id(r) not in used]
    not_counted = [{"run": describe_run(r), "why": why_not_counted(spec, r, counted), "note": r.get("note")}
                   for r in others[:MAX_LISTED]]
    calls = sum(r["calls"] for r in runs)
    summary = {"source": REPORTED, "calls": calls, "configs": len(runs), "counted": len(counted),
               "unreadable": unreadable, "not_counted": not_counted, "not_counted_more": max(0, len(others) - MAX_LISTED),
               "note": _runs_sentence(spec, calls, len(runs), len(counted), unreadable)}
    return summary, counted


def no_runs_view(what: str) -> dict:
    """Answer files checked without their notebook: no runs, and the one line that says so."""
    return {"source": None, "note": NO_RUNS_FILE if what == "file" else NO_RUNS_FOLDER}


def _runs_sentence(spec, calls: int, configs: int, counted: int, unreadable: int) -> str:
    if not calls:
        said = "your notebook reported no runs (the lab kit reports each train() call it runs)"
    else:
        repeats = f" ({configs} configurations, repeats averaged)" if configs != calls else ""
        said = (f"your notebook ran train() {calls} time{'s' if calls != 1 else ''}{repeats}; {counted} "
                f"count{'s' if counted == 1 else ''} as evidence (SGD, {spec.hidden_dim} hidden units, "
                f"{spec.epochs} epochs, a sweep's grid value with its fixed values)")
    if unreadable:
        said += f"; {unreadable} line{'s' if unreadable != 1 else ''} of the kit's runs file could not be read"
    return said


def describe_run(run: dict) -> str:
    c = run["config"]
    parts = [f"lr {_num(c.get('lr'))}", f"batch size {_num(c.get('batch_size'))}", f"momentum {_num(c.get('momentum'))}",
             c.get("optimizer") or "unknown optimizer", f"{_num(run.get('epochs'))} epochs"]
    if run.get("calls", 1) > 1:
        parts.append(f"{run['calls']} calls")
    return ", ".join(parts)


def why_not_counted(spec, run: dict, counted: dict) -> str:
    c = run["config"]
    if c.get("optimizer") != "SGD":
        return f"{c.get('optimizer') or 'an unknown optimizer'}, not SGD"
    if run.get("epochs") != spec.epochs:
        return f"{_num(run.get('epochs'))} epochs, not {spec.epochs}"
    if c.get("hidden") != spec.hidden_dim:
        return f"{_num(c.get('hidden'))} hidden units, not {spec.hidden_dim}"
    if None in (c.get("lr"), c.get("batch_size"), c.get("momentum")):
        return "its learning rate, batch size or momentum could not be read"
    if any(r is not run and _same(r, run) for r in counted.values()):
        return "a run of the same configuration counts already"
    return "not a grid value of a sweep with the sweep's fixed values"


def _same(a: dict, b: dict) -> bool:
    return all(a["config"].get(k) == b["config"].get(k) for k in ("lr", "batch_size", "momentum"))


def question_evidence(q, spec, counted: dict, answer) -> dict:
    """For a question the reference decides: evidence (as results.json holds it), coverage, and the sentence
    on consistency; evidence is None for a yes/no question whose truth the runs cannot compute."""
    usable = answer is not None and answer.answered and not answer.error
    if q.kind == "optimum":
        values = [float(v) for v in spec.sweeps[q.sweep].values]
        index = snap(float(answer.value), values, spec.snap)[0] if usable else None
        ev = optimum_evidence(q, spec, counted, REPORTED, index)
    elif q.truth:
        ev = yesno_evidence(q, spec, counted, REPORTED, answer.value.yes if usable else None)
    else:
        return {"evidence": None, "coverage": None, "consistency": None, "lines": []}
    coverage = {name: {"vary": s["vary"], "tried": s["tried"], "of": len(spec.sweeps[name].values)}
                for name, s in ev["by_sweep"].items()}
    consistency = None if not usable else "consistent" if ev["agrees"] else \
        "undecided" if ev["agrees"] is None else "not consistent"
    lines = [_consistency_line(q, spec, ev, consistency)] if usable else []
    lines.append(coverage_line(coverage))
    if q.kind == "optimum" and ev["answer_tried"] is False and spec.flag_untried:
        noun = HYPERPARAMETER_WORDS.get(ev["vary"], ev["vary"])
        lines.append(f"you never ran {noun} {_num(ev['answer'])} yourself: `grade` flags an answer your notebook "
                     "never trained for an instructor's review")
    return {"evidence": ev, "coverage": coverage, "consistency": consistency, "lines": lines}


def _consistency_line(q, spec, ev: dict, consistency: str) -> str:
    metric = METRIC_WORDS.get(ev["metric"], ev["metric"])
    if q.kind == "optimum":
        noun = HYPERPARAMETER_WORDS.get(ev["vary"], ev["vary"])
        if consistency == "consistent":
            return f"consistent with your own runs: your best {noun} by {metric} is {_num(ev['own_best'])}"
        if consistency == "not consistent":
            return f"not consistent: your own runs point to {_num(ev['own_best'])} (the best {noun} by {metric})"
        if ev["tried"]:
            return "your runs cannot decide it: every run you made on this sweep diverged"
        return f"your runs cannot decide it: you ran no {noun} of this sweep"
    own = "yes" if ev["own_truth"] else "no"
    if consistency == "consistent":
        return f"consistent with your own runs: they say '{own}' too"
    if consistency == "not consistent":
        return f"not consistent: your own runs point to '{own}'"
    need = MIN_YESNO_POINTS.get(q.truth, 2)
    sweeps = " and ".join(PLURAL_WORDS.get(spec.sweeps[s].vary, s) for s in ev["sweeps"])
    return f"your runs cannot decide it: it needs at least {need} completed runs over the {sweeps}"


def coverage_line(coverage: dict) -> str:
    parts = []
    for c in coverage.values():
        noun = PLURAL_WORDS.get(c["vary"], c["vary"])
        shown = f" ({', '.join(_num(v) for v in c['tried'])})" if c["tried"] else ""
        parts.append(f"{len(c['tried'])} of {c['of']} {noun}{shown}")
    return "you ran " + " and ".join(parts)


def snapped_line(q, spec, answer) -> str | None:
    """An optimum answer off the grid counts as its nearest grid value: said without any expected value."""
    if q.kind != "optimum" or answer is None or not answer.answered or answer.error:
        return None
    values = [float(v) for v in spec.sweeps[q.sweep].values]
    index, snapped = snap(float(answer.value), values, spec.snap)
    if not snapped:
        return None
    return f"{_num(answer.value)} is not on the grid: it counts as {_num(values[index])}, the nearest grid value"


def _num(v) -> str:
    if v is None:
        return "?"
    return f"{float(v):g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)

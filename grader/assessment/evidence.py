"""Evidence: what a student's own runs say about each question the reference decides.

For each sweep a question uses, the runs that count (from the trusted source, the sweep's fixed
hyperparameters, the spec's epochs and hidden size, plain SGD) give the student's own metric per grid
value. With one run per value (repeats are averaged first) the reference's tie rule reduces to a strict
argmax: `own_best` is the best of them, `agrees` says whether the answer is it, `complete` whether every
grid value was run. A yes/no question whose truth is computed from runs is computed again from the
student's own runs. Pure Python: the scorer, the reports and `check` call it.
"""

from __future__ import annotations

import math

from reference.analysis import spearman, tie_set
from reference.spec import Config, hyperparameter_value

MIN_YESNO_POINTS = {"test_optimum_in_train_tie_set": 2, "noise_rank_correlation_positive": 3}


def counted_runs(spec, runs: list[dict] | None, source: str | None) -> dict[Config, dict] | None:
    """Config -> the run that counts for it; None when no source counts (no evidence rule applies)."""
    if runs is None or source is None:
        return None
    return sweep_configs(spec, [r for r in runs if isinstance(r, dict) and r.get("source") == source])


def sweep_configs(spec, runs: list[dict]) -> dict[Config, dict]:
    """Config of any sweep -> the first run of it with the spec's epochs and hidden size, plain SGD and the
    default initialisation (a run from crafted weights could make any grid value look best)."""
    out: dict[Config, dict] = {}
    for r in runs:
        if r.get("init") == "custom":
            continue
        c = r.get("config") if isinstance(r.get("config"), dict) else {}
        lr, batch, momentum = c.get("lr"), c.get("batch_size"), c.get("momentum")
        if (r.get("epochs") != spec.epochs or c.get("hidden") != spec.hidden_dim or c.get("optimizer") != "SGD"
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lr, batch, momentum))):
            continue
        for config in spec.configs():
            if (math.isclose(lr, config.lr, rel_tol=1e-9) and batch == config.batch_size
                    and math.isclose(momentum, config.momentum, rel_tol=1e-9, abs_tol=1e-12)):
                out.setdefault(config, r)
    return out


def metric_of(run: dict, metric: str) -> float | None:
    """A run's metric (as reference.analysis.run_metrics defines them); None for a diverged or incomplete run."""
    h = run.get("history")
    if not h:
        return None
    curve = h.get("acc" if metric.endswith("train_acc") else "test_acc") or []
    if not curve or any(v is None for v in curve):
        return None
    return float(max(curve) if metric.startswith("best") else curve[-1])


def key(value) -> str:
    return f"{float(value):g}"


def sweep_evidence(spec, sweep_name: str, counted: dict[Config, dict], metric: str) -> dict:
    sweep = spec.sweeps[sweep_name]
    tried, own = [], {}
    for value, config in zip(sweep.values, sweep.configs()):
        run = counted.get(config)
        if run is not None:
            tried.append(hyperparameter_value(sweep.vary, value))
            own[key(value)] = metric_of(run, metric)
    return {"vary": sweep.vary, "tried": tried, "complete": len(tried) == len(sweep.values), "own_metric": own}


def _base(q, spec, counted, source, metric) -> dict:
    sweeps = [q.sweep] if q.sweep else list(q.sweeps)
    by_sweep = {name: sweep_evidence(spec, name, counted, metric) for name in sweeps}
    first = by_sweep[sweeps[0]]
    return {"sweeps": sweeps, "vary": first["vary"], "metric": metric, "tried": first["tried"],
            "own_metric": first["own_metric"], "own_best": None, "agrees": None,
            "complete": all(s["complete"] for s in by_sweep.values()), "answer_tried": None,
            "by_sweep": by_sweep, "own_truth": None, "answer": None, "source": source}


def optimum_evidence(q, spec, counted, source: str, answer_index: int | None) -> dict:
    """answer_index: the grid index the (snapped) answer stands for, or None when there is no usable answer."""
    ev = _base(q, spec, counted, source, q.metric)
    sweep = spec.sweeps[q.sweep]
    rows = [{"value": v, "mean": ev["own_metric"][key(v)], "se": 0.0} for v in sweep.values
            if ev["own_metric"].get(key(v)) is not None]
    if rows:
        best, ties = tie_set(rows, 0.0)
        ev["own_best"] = hyperparameter_value(sweep.vary, best)
    if answer_index is not None:
        answer = sweep.values[answer_index]
        ev["answer"] = hyperparameter_value(sweep.vary, answer)
        ev["answer_tried"] = key(answer) in ev["own_metric"]
        if rows:
            ev["agrees"] = any(math.isclose(answer, t, rel_tol=1e-9) for t in ties)
    return ev


def yesno_evidence(q, spec, counted, source: str, yes: bool | None) -> dict:
    """The yes/no truth computed from the student's own runs, as the reference computes it from its seeds."""
    metric = q.metric or "best_test_acc"
    ev = _base(q, spec, counted, source, metric)
    if q.truth == "test_optimum_in_train_tie_set":
        truth = _test_optimum_in_train_ties(spec, q.sweep, counted)
    else:
        truth = _noise_correlation_positive(spec, q.sweeps, counted, metric)
    ev["own_truth"] = truth
    if truth is not None and yes is not None:
        ev["agrees"] = yes == truth
    return ev


def _test_optimum_in_train_ties(spec, sweep_name: str, counted) -> bool | None:
    sweep = spec.sweeps[sweep_name]
    rows = {"final_train_acc": [], "best_test_acc": []}
    for value, config in zip(sweep.values, sweep.configs()):
        run = counted.get(config)
        train, test = (metric_of(run, m) if run else None for m in rows)
        if train is not None and test is not None:
            rows["final_train_acc"].append({"value": value, "mean": train, "se": 0.0})
            rows["best_test_acc"].append({"value": value, "mean": test, "se": 0.0})
    if len(rows["best_test_acc"]) < MIN_YESNO_POINTS["test_optimum_in_train_tie_set"]:
        return None
    test_best, _ = tie_set(rows["best_test_acc"], 0.0)
    _, train_ties = tie_set(rows["final_train_acc"], 0.0)
    return test_best in train_ties


def _noise_correlation_positive(spec, sweep_names, counted, metric: str) -> bool | None:
    points: dict[Config, float] = {}
    for name in sweep_names:
        for config in spec.sweeps[name].configs():
            run = counted.get(config)
            value = metric_of(run, metric) if run else None
            if value is not None:
                points.setdefault(config, value)
    if len(points) < MIN_YESNO_POINTS["noise_rank_correlation_positive"]:
        return None
    return spearman([c.lr / c.batch_size for c in points], list(points.values())) > 0

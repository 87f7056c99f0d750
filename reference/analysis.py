"""Sweep results -> metric tables, tie sets and yes/no truths: the expected answers, with reasons.

Pure Python (no torch): the grader and `reference show` read these numbers without training.
Rules (DESIGN.md): standard error = sample std (ddof=1) / sqrt(n), 0 for n = 1; v ties with the
best b when mean_b - mean_v <= z * sqrt(se_b^2 + se_v^2); Spearman rho uses average ranks.
"""

from __future__ import annotations

import math
import statistics
from typing import Iterable, Sequence

from reference.spec import METRICS, Config, Spec, Sweep

# Float noise allowance when comparing a difference of means with z standard errors, so two
# values whose means agree up to rounding always tie.
TIE_EPS = 1e-12

METRIC_NAMES = {
    "final_train_acc": "final training accuracy",
    "best_test_acc": "best test accuracy",
    "final_test_acc": "final test accuracy",
    "best_train_acc": "best training accuracy",
}
VARY_NAMES = {"lr": "learning rate", "batch_size": "batch size", "momentum": "momentum"}


def run_metrics(history: dict) -> dict[str, float]:
    """The four per-run metrics; a diverged run's chance accuracies count as they are."""
    acc, test_acc = history["acc"], history["test_acc"]
    return {"final_train_acc": float(acc[-1]), "best_test_acc": float(max(test_acc)),
            "final_test_acc": float(test_acc[-1]), "best_train_acc": float(max(acc))}


def config_of(run: dict) -> Config:
    c = run["config"]
    return Config(float(c["lr"]), int(c["batch_size"]), float(c["momentum"]))


def index_runs(runs: Iterable[dict]) -> dict[Config, list[dict]]:
    out: dict[Config, list[dict]] = {}
    for run in runs:
        out.setdefault(config_of(run), []).append(run)
    return out


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Exactly rounded (the statistics module works in fractions), so equal seeds give se 0, not 1e-17."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = float(statistics.mean(values))
    if n == 1:
        return mean, 0.0
    return mean, float(statistics.stdev(values)) / math.sqrt(n)


def table_row(value, runs: Sequence[dict], metric: str, seeds: Sequence[int] | None = None) -> dict:
    """One grid value's row: seed-mean, standard error, n, diverged count, the per-seed values in seed order."""
    order = {s: i for i, s in enumerate(seeds)} if seeds is not None else {}
    chosen = [r for r in runs if seeds is None or r["seed"] in order]
    chosen.sort(key=lambda r: order.get(r["seed"], r["seed"]))
    if not chosen:
        raise ValueError(f"no runs for grid value {value!r}")
    per_seed = [run_metrics(r["history"])[metric] for r in chosen]
    mean, se = mean_se(per_seed)
    return {"value": value, "mean": mean, "se": se, "n": len(per_seed),
            "n_diverged": sum(1 for r in chosen if r.get("diverged")), "per_seed": per_seed}


def sweep_table(sweep: Sweep, by_config: dict[Config, list[dict]], metric: str,
                seeds: Sequence[int] | None = None) -> list[dict]:
    return [table_row(v, by_config.get(c, []), metric, seeds) for v, c in zip(sweep.values, sweep.configs())]


def all_tables(spec: Spec, runs: Iterable[dict], seeds: Sequence[int] | None = None) -> dict:
    """{sweep: {metric: rows}} for every sweep of the spec and every metric."""
    by_config = runs if isinstance(runs, dict) else index_runs(runs)
    return {name: {m: sweep_table(sw, by_config, m, seeds) for m in METRICS} for name, sw in spec.sweeps.items()}


def tie_set(rows: Sequence[dict], z: float) -> tuple:
    """-> (best value, tie set in grid order); the best is the highest mean, the first on equal means."""
    best = max(rows, key=lambda r: r["mean"])
    ties = [r["value"] for r in rows
            if best["mean"] - r["mean"] <= z * math.sqrt(best["se"] ** 2 + r["se"] ** 2) + TIE_EPS]
    return best["value"], ties


def average_ranks(xs: Sequence[float]) -> list[float]:
    """Ranks 1..n, tied values sharing the mean of their ranks."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson correlation of average ranks; 0 when either side has no spread (no evidence either way)."""
    if len(xs) != len(ys):
        raise ValueError("spearman: lengths differ")
    rx, ry = average_ranks(xs), average_ranks(ys)
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(rx) / n, sum(ry) / n
    sxy = math.fsum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = math.fsum((a - mx) ** 2 for a in rx)
    syy = math.fsum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return 0.0
    return sxy / math.sqrt(sxx * syy)


def fmt_value(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def fmt_set(values) -> str:
    return "{" + ", ".join(fmt_value(v) for v in values) + "}"


def optimum_answer(spec: Spec, question, tables: dict, source: str) -> dict:
    """An optimum question's expected answer: grid, table, best value and tie set, with a reason."""
    sweep = spec.sweeps[question.sweep]
    rows = tables[question.sweep][question.metric]
    best, ties = tie_set(rows, spec.z)
    row = next(r for r in rows if r["value"] == best)
    what = f"{METRIC_NAMES[question.metric]} ({source})"
    noun = VARY_NAMES[sweep.vary]
    others = [v for v in ties if v != best]
    if others:
        tail = f"{fmt_set(others)} {'is' if len(others) == 1 else 'are'} within {spec.z:g} standard errors of the difference, so the tie set is {fmt_set(ties)}"
    else:
        tail = f"no other value is within {spec.z:g} standard errors of the difference"
    explanation = (f"The mean {what} is highest at {noun} {fmt_value(best)} "
                   f"({row['mean']:.4f} ± {row['se']:.4f} SE, n={row['n']}); {tail}.")
    return {"kind": "optimum", "sweep": question.sweep, "vary": sweep.vary, "metric": question.metric,
            "z": spec.z, "grid": list(sweep.values), "table": rows, "best": best, "tie_set": ties,
            "explanation": explanation}


def test_optimum_in_train_tie_set(spec: Spec, sweep_name: str, tables: dict, source: str) -> dict:
    """Truth of ex1 b: is the value with the best mean best_test_acc in the final_train_acc tie set?"""
    sweep = spec.sweeps[sweep_name]
    test_best, _ = tie_set(tables[sweep_name]["best_test_acc"], spec.z)
    train_best, train_ties = tie_set(tables[sweep_name]["final_train_acc"], spec.z)
    truth = test_best in train_ties
    noun = VARY_NAMES[sweep.vary]
    explanation = (f"The {noun} with the best mean best test accuracy, {fmt_value(test_best)}, is "
                   f"{'inside' if truth else 'outside'} the tie set {fmt_set(train_ties)} of the final "
                   f"training accuracy ({source}).")
    details = {"sweep": sweep_name, "vary": sweep.vary, "test_metric": "best_test_acc",
               "train_metric": "final_train_acc", "test_optimum": test_best, "train_optimum": train_best,
               "train_tie_set": train_ties, "z": spec.z}
    return {"kind": "yesno", "truth": truth, "explanation": explanation, "details": details}


def noise_rank_correlation_positive(spec: Spec, sweep_names: Sequence[str], metric: str,
                                    by_config: dict[Config, list[dict]], seeds: Sequence[int] | None,
                                    source: str) -> dict:
    """Truth of ex2 c: Spearman rho between lr / batch_size and the seed-mean metric, each config once, > 0."""
    configs: dict[Config, None] = {}
    for name in sweep_names:
        for c in spec.sweeps[name].configs():
            configs.setdefault(c, None)
    points = []
    for c in configs:
        row = table_row(None, by_config.get(c, []), metric, seeds)
        points.append({"lr": c.lr, "batch_size": c.batch_size, "momentum": c.momentum,
                       "noise": c.lr / c.batch_size, "mean": row["mean"]})
    rho = spearman([p["noise"] for p in points], [p["mean"] for p in points])
    truth = rho > 0
    sign = "positive" if rho > 0 else "zero" if rho == 0 else "negative"
    explanation = (f"Spearman's rank correlation between SGD noise (learning rate / batch size) and mean "
                   f"{METRIC_NAMES[metric]} over the {len(points)} configurations of the "
                   f"{' and '.join(sweep_names)} sweeps is {rho:+.3f}, {sign} ({source}).")
    details = {"sweeps": list(sweep_names), "metric": metric, "rho": rho, "n_configs": len(points),
               "points": points}
    return {"kind": "yesno", "truth": truth, "explanation": explanation, "details": details}


def expected_answers(spec: Spec, runs: Sequence[dict], seeds: Sequence[int] | None = None,
                     source: str = "") -> tuple[dict, dict]:
    """-> (tables, questions) as the reference artifact holds them.

    source: where the numbers came from, e.g. "3 seeds, synthetic data, cpu", quoted in each reason.
    """
    source = source or f"{len(seeds) if seeds is not None else '?'} seeds"
    by_config = index_runs(runs)
    tables = all_tables(spec, by_config, seeds)
    questions = {}
    for q in spec.questions:
        if q.kind == "optimum":
            questions[q.id] = optimum_answer(spec, q, tables, source)
        elif q.kind == "yesno" and q.truth == "test_optimum_in_train_tie_set":
            questions[q.id] = test_optimum_in_train_tie_set(spec, q.sweep, tables, source)
        elif q.kind == "yesno":
            questions[q.id] = noise_rank_correlation_positive(spec, q.sweeps, q.metric, by_config, seeds, source)
        else:
            questions[q.id] = {"kind": "text"}
    return tables, questions

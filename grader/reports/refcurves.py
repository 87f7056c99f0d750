"""Read what a report needs from a reference artifact: learning curves per grid value, a student's grid choice.

Accepts the artifact as a plain dict or as grader.assessment.reference_io.Reference (its `.data`).
Snapping uses grader.assessment.score.snap, so a report shows exactly the grid value that was scored.
"""

from __future__ import annotations

import math
from typing import Any

from grader.assessment.score import snap
from reference.spec import hyperparameter_value

METRIC_CURVE = {
    "final_train_acc": "acc",
    "best_train_acc": "acc",
    "best_test_acc": "test_acc",
    "final_test_acc": "test_acc",
}
CURVE_WORDS = {"acc": "training accuracy", "test_acc": "test accuracy"}
METRIC_WORDS = {"final_train_acc": "final training accuracy", "best_test_acc": "best test accuracy",
                "final_test_acc": "final test accuracy", "best_train_acc": "best training accuracy"}
VARY_WORDS = {"lr": "learning rate η", "batch_size": "batch size S", "momentum": "momentum μ"}


def artifact(reference: Any) -> dict:
    return getattr(reference, "data", reference) or {}


def question_ref(reference: Any, qid: str) -> dict:
    return artifact(reference).get("questions", {}).get(qid) or {}


def parse_number(raw: Any) -> float | None:
    """A numeric answer as the schemas accept it (number or numeric string), else None."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        return None
    try:
        value = float(raw)
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def same(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def vary_of(qref: dict, spec, qid: str) -> str | None:
    """The hyperparameter a question's sweep varies."""
    sweep = spec.sweeps.get(qref.get("sweep") or spec.question(qid).sweep or "")
    return qref.get("vary") or (sweep.vary if sweep else None)


def grid_of(qref: dict, spec, qid: str) -> list[float]:
    """The sweep's grid, each value as people write it (batch sizes as integers)."""
    vary = vary_of(qref, spec, qid)
    if qref.get("grid"):
        return [hyperparameter_value(vary, g) for g in qref["grid"]]
    sweep = spec.sweeps.get(spec.question(qid).sweep or "")
    return [hyperparameter_value(vary, v) for v in sweep.values] if sweep else []


def student_choice(raw: Any, grid: list[float], snap_mode: str) -> dict | None:
    """{value, grid_value, snapped} for a readable numeric answer on a non-empty grid, else None."""
    value = parse_number(raw)
    if value is None or not grid:
        return None
    index, snapped = snap(value, grid, snap_mode)
    return {"value": value, "grid_value": grid[index], "snapped": snapped}


def in_set(value: float, values) -> bool:
    return any(same(value, v) for v in values or ())


def sweep_fixed(reference: Any, spec, sweep: str) -> dict:
    fixed = artifact(reference).get("sweeps", {}).get(sweep, {}).get("fixed")
    if fixed is None and sweep in spec.sweeps:
        fixed = spec.sweeps[sweep].fixed
    return dict(fixed or {})


def mean_curves(reference: Any, spec, qref: dict, values: list[float]) -> dict[float, list[float | None]]:
    """Seed-mean per epoch of the question's metric curve (acc or test_acc), for each grid value asked.

    A grid value without runs in the artifact is left out; an epoch where no seed has a number is None.
    """
    key = METRIC_CURVE.get(qref.get("metric", ""), "acc")
    vary, sweep = qref.get("vary"), qref.get("sweep")
    if not vary or not sweep:
        return {}
    fixed = sweep_fixed(reference, spec, sweep)
    runs = artifact(reference).get("runs", [])
    out = {}
    for value in values:
        curves = [r.get("history", {}).get(key) or [] for r in runs
                  if _matches(r.get("config", {}), vary, value, fixed)]
        curves = [c for c in curves if c]
        if curves:
            out[value] = _epoch_means(curves)
    return out


def seed_band(reference: Any, spec, sweep: str, key: str, values: list[float]) -> dict[float, tuple[list, list]]:
    """Per epoch, the lowest and highest value over the reference's seeds of curve `key` (acc or test_acc),
    for each grid value asked of the sweep: what one seed of the student's own may land in.

    A grid value without runs in the artifact is left out; an epoch where no seed has a number is None in both.
    """
    vary = artifact(reference).get("sweeps", {}).get(sweep, {}).get("vary")
    if vary is None and sweep in spec.sweeps:
        vary = spec.sweeps[sweep].vary
    if not vary:
        return {}
    fixed = sweep_fixed(reference, spec, sweep)
    runs = artifact(reference).get("runs", [])
    out = {}
    for value in values:
        curves = [c for c in (r.get("history", {}).get(key) or [] for r in runs
                              if _matches(r.get("config", {}), vary, value, fixed)) if c]
        if curves:
            out[value] = _epoch_extremes(curves)
    return out


def metric_epoch(curve: list[float | None], metric: str) -> int | None:
    """The epoch whose value the metric reads: the last one for final_*, the highest for best_*."""
    points = [(i, v) for i, v in enumerate(curve) if v is not None]
    if not points:
        return None
    if metric.startswith("best"):
        return max(points, key=lambda iv: iv[1])[0]
    return points[-1][0]


def _matches(config: dict, vary: str, value: float, fixed: dict) -> bool:
    if vary not in config or not same(config[vary], value):
        return False
    return all(k in config and same(config[k], v) for k, v in fixed.items())


def _epoch_means(curves: list[list]) -> list[float | None]:
    length = max(len(c) for c in curves)
    means = []
    for e in range(length):
        xs = [c[e] for c in curves if e < len(c) and isinstance(c[e], (int, float)) and math.isfinite(c[e])]
        means.append(sum(xs) / len(xs) if xs else None)
    return means


def _epoch_extremes(curves: list[list]) -> tuple[list, list]:
    low, high = [], []
    for e in range(max(len(c) for c in curves)):
        xs = [c[e] for c in curves if e < len(c) and isinstance(c[e], (int, float)) and math.isfinite(c[e])]
        low.append(min(xs) if xs else None)
        high.append(max(xs) if xs else None)
    return low, high

"""Results with a runs record and evidence (runs, runs_summary, each question's evidence: the shape
schemas/results.schema.json gives) for the demo spec and tests/fakes.py's reference: one student per
evidence case, built by hand so the report tests do not depend on the code that computes evidence.

- ava: every learning rate (1.0 diverged), 4 of 7 batch sizes; her answers are her own runs' optima.
- ben: every learning rate; his own runs put 0.1 first, outside the reference's tie set {0.3, 0.5}:
  the own-runs rule gives half the points.
- cal: two learning rates, and answers 0.3, which he never trained: flagged for review.
- dee: trained only in the notebook (Adam): three notebook-reported runs, no evidence.
- eli: no runs record at all (graded with --no-execute): the page is as before evidence existed.
- fay: a runs record, but the service trained nothing for her.
"""

from __future__ import annotations

from fakes import EPOCHS, GOOD_ANSWERS, TEST_LEVEL, TRAIN_LEVEL, WRONG_ANSWERS, _history, _metric, fake_result
from grader.reports.refcurves import parse_number
from reference.spec import hyperparameter_value

ADAM_NOTE = "optimizer Adam is not the lab's SGD: trained in the notebook"
REPORTED_NOTE = "3 notebook-reported runs are shown but are not evidence: only runs the training service made count"


def service_run(sp, sweep: str, value, *, shift: float = 0.0005, served: str = "trained", calls: int = 1,
                train: float | None = None, epochs: int = EPOCHS) -> dict:
    """A run the training service recorded for grid value `value` of `sweep` (one seed: levels + shift)."""
    s = sp.sweeps[sweep]
    config = {**s.fixed, s.vary: value, "hidden": sp.hidden_dim, "optimizer": "SGD"}
    config = {k: hyperparameter_value(k, v) if k in ("lr", "batch_size", "momentum") else v for k, v in config.items()}
    level = TRAIN_LEVEL[sweep][value] if train is None else train
    history = None if served == "diverged" else _history(level, TEST_LEVEL[sweep][value], shift)
    return {"config": config, "epochs": epochs, "source": "service", "served": served, "calls": calls,
            "history": history, "note": None}


def reported_run(config: dict, note: str = ADAM_NOTE, epochs=EPOCHS, served="notebook") -> dict:
    """A run the notebook's kit reported (untrusted: any field may be anything)."""
    return {"config": config, "epochs": epochs, "source": "notebook-reported", "served": served, "calls": 1,
            "history": _history(0.9, 0.85, 0.0), "note": note}


def own_metrics(runs: list[dict], sp, sweep: str, metric: str) -> dict[str, float | None]:
    """f"{v:g}" -> the metric of the full-epoch service run of each grid value run (None: diverged)."""
    s = sp.sweeps[sweep]
    out = {}
    for v in s.values:
        for r in runs:
            if r["source"] == "service" and r["epochs"] == EPOCHS and r["config"][s.vary] == v \
                    and all(r["config"][k] == fv for k, fv in s.fixed.items()):
                out[f"{v:g}"] = None if r["history"] is None else _metric(r["history"], metric)
                break
    return out


def evidence(q, answer, runs: list[dict], sp, *, own_truth=None) -> dict:
    """The evidence entry of one question, the contract's shape."""
    sweeps = list(q.sweeps) or [q.sweep]
    metric = q.metric or "best_test_acc"
    by_sweep = {}
    for s in sweeps:
        own = own_metrics(runs, sp, s, metric)
        tried = [hyperparameter_value(sp.sweeps[s].vary, v) for v in sp.sweeps[s].values if f"{v:g}" in own]
        by_sweep[s] = {"vary": sp.sweeps[s].vary, "tried": tried, "complete": len(tried) == len(sp.sweeps[s].values),
                       "own_metric": own}
    first = by_sweep[sweeps[0]]
    scored = {k: v for k, v in first["own_metric"].items() if v is not None}
    own_best = None
    if scored:
        best_key = max(scored, key=scored.get)
        own_best = next(v for v in first["tried"] if f"{v:g}" == best_key)
    ev = {"sweeps": sweeps, "vary": first["vary"], "metric": metric, "tried": first["tried"],
          "own_metric": first["own_metric"], "own_best": own_best, "agrees": None,
          "complete": all(b["complete"] for b in by_sweep.values()), "answer_tried": None, "by_sweep": by_sweep,
          "own_truth": None, "source": "service"}
    if q.kind == "optimum":
        value = parse_number(answer)
        ev["answer_tried"] = value is not None and any(abs(value - t) < 1e-12 for t in first["tried"])
        ev["agrees"] = None if own_best is None or value is None else abs(value - own_best) < 1e-12
    else:
        ev["own_best"] = None
        ev["own_truth"] = own_truth
        said = str(answer).strip().lower()
        ev["agrees"] = None if own_truth is None else said.startswith("yes") == own_truth
    return ev


def with_runs(result: dict, runs: list[dict], sp, *, truths: dict | None = None, reported_note: str | None = None) -> dict:
    """The result with its runs record, its summary and evidence for every question the reference decides."""
    service = [r for r in runs if r["source"] == "service"]
    result["runs"] = runs
    result["runs_summary"] = {"service": len(service), "notebook_reported": len(runs) - len(service),
                              "calls": sum(r["calls"] for r in runs), "evidence": "service", "note": reported_note}
    for q in sp.questions:
        if q.kind in ("optimum", "yesno"):
            entry = result["questions"][q.id]
            entry["evidence"] = evidence(q, entry["answer"], runs, sp, own_truth=(truths or {}).get(q.id))
            entry.setdefault("evidence_rule", None)
    return result


def evidence_result(sp, ref) -> dict:
    """ava: the fullest case (every learning rate, 4 batch sizes, a diverged run, a repeated one, a short one)."""
    runs = [service_run(sp, "lr", v, served="diverged" if v == 1.0 else "memo" if v == 0.1 else "trained",
                        calls=2 if v == 0.03 else 1) for v in sp.sweeps["lr"].values]
    runs += [service_run(sp, "batch", v, served="joined" if v == 64 else "trained") for v in (32, 64, 256)]
    runs.append(service_run(sp, "lr", 0.3, epochs=3))
    result = fake_result("ava", GOOD_ANSWERS, sp=sp, ref=ref)
    return with_runs(result, runs, sp, truths={"ex1.b": False})


def evidence_results(sp, ref) -> list[dict]:
    """One student per evidence case (see the module docstring), in name order."""
    ben_runs = [service_run(sp, "lr", v, train=0.95 if v == 0.1 else None) for v in sp.sweeps["lr"].values
                if v != 1.0] + [service_run(sp, "lr", 1.0, served="diverged")]
    ben = with_runs(fake_result("ben", {**WRONG_ANSWERS, "ex1.a": "0.1"}, sp=sp, ref=ref), ben_runs, sp,
                    truths={"ex1.b": True})
    entry = ben["questions"]["ex1.a"]
    entry.update(points=1.0, verdict="partly", evidence_rule="own-runs",
                 feedback="Your own runs pointed to 0.1; over 3 seeds the reference finds 0.3 and 0.5 "
                          "indistinguishable and 0.1 below them: half the points for reading your runs right.")
    cal = with_runs(fake_result("cal", {**GOOD_ANSWERS, "ex1.a": "0.3"}, sp=sp, ref=ref),
                    [service_run(sp, "lr", v) for v in (0.01, 0.1)], sp)
    cal["questions"]["ex1.a"].update(verdict="review", review=True, evidence_rule="untried",
                                     feedback="You answered 0.3, which your notebook never trained: flagged for review.")
    cal["review"] = True
    adam = [reported_run({"lr": v, "batch_size": 128, "momentum": None, "hidden": 512, "optimizer": "Adam"})
            for v in (0.001, 0.003, 0.01)]
    dee = with_runs(fake_result("dee", GOOD_ANSWERS, sp=sp, ref=ref), adam, sp, reported_note=REPORTED_NOTE)
    eli = fake_result("eli", GOOD_ANSWERS, sp=sp, ref=ref)
    eli["runs"] = None
    fay = with_runs(fake_result("fay", WRONG_ANSWERS, sp=sp, ref=ref), [], sp)
    return [evidence_result(sp, ref), ben, cal, dee, eli, fay]

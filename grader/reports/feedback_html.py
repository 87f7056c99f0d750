"""One self-contained HTML feedback page per student: answers, points, expectations, curves, errors.

The page is templates/feedback.html over plain data (feedback_page); everything a student wrote
(answers, names, reasons, tracebacks of their code) reaches it as text and is made inert and escaped
there: it is hostile input. The scorer's feedback sentence says why; the artifact's explanation
stands in when it is empty.
With hide_answers the page says right or wrong only: no expected value, no scorer sentence
(it may have been written with the expected value), and the figure shows only the student's
own choice.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from grader.reports.htmlkit import Figure, new_figure, num, png_data_uri, render
from grader.reports.refcurves import (CURVE_WORDS, METRIC_CURVE, METRIC_WORDS, VARY_WORDS, grid_of, in_set,
                                      mean_curves, metric_epoch, question_ref, same, student_choice)
from grader.reports.ownruns import evidence_section
from grader.reports.ownruns_plot import sweep_figure
from grader.execution.traceback_trim import failing_cell
from reference.spec import hyperparameter_value

VERDICT_WORDS = {"right": "right", "partly": "partly right", "wrong": "wrong", "review": "to be reviewed",
                 "missing": "not answered"}
HIDDEN_SENTENCES = {
    "right": "Your answer is right.",
    "partly": "Your answer is partly right.",
    "wrong": "Your answer is wrong.",
    "review": "These points are provisional until an instructor reviews your answer.",
    "missing": "Not answered.",
}
MAX_ANSWER_CHARS = 5000


def render_feedback_html(result: dict, spec, reference, *, hide_answers: bool = False,
                         executed_notebook: Any = None) -> str:
    """The student's feedback page as one HTML string (the caller writes it atomically).

    executed_notebook: a path or an nbformat notebook to take the failing cell's traceback from;
    by default result["executed"] when the run did not end as "graded".
    """
    return render("feedback.html", page=feedback_page(result, spec, reference, hide_answers=hide_answers,
                                                      executed_notebook=executed_notebook))


def feedback_page(result: dict, spec, reference, *, hide_answers: bool = False, executed_notebook: Any = None) -> dict:
    """What the page shows, as plain data: numbers formatted, figures as data URIs, student text as it came."""
    questions = result.get("questions") or {}
    return {
        "assignment": spec.assignment_id,
        "assignment_title": spec.title,
        "student": str(result.get("student", "?")),
        "score": num(result.get("total", 0)),
        "max": num(result.get("max", spec.max_points)),
        "review": bool(result.get("review")),
        "hidden": hide_answers,
        "status": _status(result, executed_notebook),
        "questions": [_question(q, questions.get(q.id), spec, reference, hide_answers) for q in spec.questions],
        "evidence": _evidence(result, spec, reference, hide_answers),
    }


def optimum_plot(q, entry: dict | None, spec, reference, *, hide_answers: bool) -> dict | None:
    """What the figure of a numeric question shows, as plain data; None when there is nothing to draw.

    Hidden mode keeps only the student's own (snapped) choice: no best value, no tie set, no table.
    """
    qref = question_ref(reference, q.id)
    grid = grid_of(qref, spec, q.id)
    choice = student_choice((entry or {}).get("answer"), grid, spec.snap)
    sweep = qref.get("sweep") or q.sweep
    vary = qref.get("vary") or (spec.sweeps[sweep].vary if sweep in spec.sweeps else None)
    best = None if hide_answers or qref.get("best") is None else hyperparameter_value(vary, qref["best"])
    values = [choice["grid_value"]] if choice else []
    if best is not None and not in_set(best, values):
        values.append(best)
    metric = qref.get("metric") or q.metric
    curves = mean_curves(reference, spec, {"sweep": sweep, "vary": vary, "metric": metric}, values)
    table = [] if hide_answers else [r for r in qref.get("table") or [] if r.get("mean") is not None]
    if not curves and not table:
        return None
    return {
        "metric": metric,
        "vary": vary or "value",
        "curves": curves,
        "choice": choice["grid_value"] if choice else None,
        "best": best,
        "tie_set": [] if hide_answers else [hyperparameter_value(vary, t) for t in qref.get("tie_set") or []],
        "table": table,
        "z": float(qref.get("z", spec.z)),
    }


def _evidence(result: dict, spec, reference, hide: bool) -> dict | None:
    """The "Your own runs" section with each sweep's figure drawn; None without a runs record."""
    section = evidence_section(result, spec, reference, hidden=hide)
    if section is not None:
        for part in section["sweeps"]:
            part["figure"] = sweep_figure(part["plot"]) if part["plot"] else None
    return section


def _status(result: dict, executed_notebook: Any) -> dict | None:
    status = str(result.get("status", "graded"))
    if status == "graded":
        return None
    source = executed_notebook if executed_notebook is not None else result.get("executed")
    failed = failing_cell(source) if source else None
    return {
        "status": status,
        "reason": str(result.get("reason") or ""),
        "errors": [str(e) for e in result.get("errors") or []],
        "failed": {k: str(failed[k]) for k in ("label", "ename", "traceback")} if failed else None,
    }


def _question(q, entry: dict | None, spec, reference, hide: bool) -> dict:
    entry = entry or {"points": 0.0, "max": q.points, "verdict": "missing", "answer": None,
                      "expected": None, "feedback": "", "review": False}
    verdict = str(entry.get("verdict", "missing"))
    qref = question_ref(reference, q.id)
    feedback = "" if hide else str(entry.get("feedback") or "")
    plot = optimum_plot(q, entry, spec, reference, hide_answers=hide) if q.kind == "optimum" else None
    override = entry.get("override")
    return {
        "id": q.id,
        "verdict_css": verdict if verdict in VERDICT_WORDS else "missing",
        "verdict_words": VERDICT_WORDS.get(verdict, verdict),
        "points": num(entry.get("points", 0)),
        "max": num(entry.get("max", q.points)),
        "prompt": q.prompt or "",
        "answer": _show_answer(entry.get("answer")),
        "snap": _snap_note(entry, qref, spec, q.id) if q.kind == "optimum" and "not on the grid" not in feedback else None,
        "hidden_sentence": HIDDEN_SENTENCES.get(verdict, "") if hide else "",
        "expected": None if hide else _expected(q, entry, qref),
        "feedback": feedback,
        "why": "" if hide or feedback else str(qref.get("explanation") or ""),
        "figure": _figure(plot) if plot else None,
        "review": bool(entry.get("review")),
        "override": ({"points": num(override.get("points")), "comment": str(override.get("comment") or "")}
                     if isinstance(override, dict) else None),
    }


def _show_answer(answer: Any) -> str:
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        return "(not answered)"
    if isinstance(answer, bool):
        return "yes" if answer else "no"
    if isinstance(answer, str):
        text = answer
    elif isinstance(answer, (int, float)):
        text = repr(answer)
    else:
        text = json.dumps(answer, ensure_ascii=False)
    if len(text) > MAX_ANSWER_CHARS:
        text = text[:MAX_ANSWER_CHARS] + f"… ({len(text) - MAX_ANSWER_CHARS} more characters)"
    return text


def _snap_note(entry: dict, qref: dict, spec, qid: str) -> dict | None:
    answer = entry.get("answer")
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        return None
    choice = student_choice(answer, grid_of(qref, spec, qid), spec.snap)
    if choice is None:
        return {"unreadable": True}
    if not choice["snapped"]:
        return None
    return {"unreadable": False, "value": num(choice["value"]), "grid_value": num(choice["grid_value"]),
            "log_scale": spec.snap == "log" and choice["value"] > 0}


def _expected(q, entry: dict, qref: dict) -> dict | None:
    expected = entry.get("expected")
    if q.kind == "optimum":
        tie = expected if isinstance(expected, list) and expected else qref.get("tie_set") or []
        if not tie:
            return None
        best = qref.get("best")
        return {"kind": "optimum", "tie_set": "{" + ", ".join(num(float(t)) for t in tie) + "}",
                "best": num(float(best)) if best is not None else ""}
    if q.kind == "yesno":
        truth = expected if isinstance(expected, bool) else qref.get("truth")
        if not isinstance(truth, bool):
            return None
        return {"kind": "yesno", "truth": "yes" if truth else "no"}
    return None


def _figure(plot: dict) -> Figure:
    """The curves travel as [value, curve] pairs: JSON would turn their float keys into strings."""
    return _figure_cached(json.dumps({**plot, "curves": list(plot["curves"].items())}, sort_keys=True, default=str))


@functools.lru_cache(maxsize=512)
def _figure_cached(plot_json: str) -> Figure:
    """A class shares a handful of (question, choice) figures: each is drawn once per process."""
    plot = json.loads(plot_json)
    plot["curves"] = {value: curve for value, curve in plot["curves"]}
    return _draw_figure(plot)


def _draw_figure(plot: dict) -> Figure:
    """The curves of the student's choice (and, unless hidden, of the best value) beside the sweep's table."""
    key = METRIC_CURVE.get(plot["metric"], "acc")
    curve_words = CURVE_WORDS[key]
    vary_words = VARY_WORDS.get(plot["vary"], plot["vary"])
    metric_words = METRIC_WORDS.get(plot["metric"], plot["metric"])
    panels = (1 if plot["curves"] else 0) + (1 if plot["table"] else 0)
    fig = new_figure(4.6 * panels + 0.4, 3.4)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    at = 0
    if plot["curves"]:
        _draw_curves(axes[at], plot, curve_words, vary_words)
        at += 1
    if plot["table"]:
        _draw_table(axes[at], plot, metric_words, vary_words)
    uri = png_data_uri(fig)
    shown = ", ".join(f"{vary_words} = {num(v)}" for v in plot["curves"])
    caption = f"Seed-mean {curve_words} per epoch ({shown})" if plot["curves"] else ""
    if plot["curves"] and plot["metric"]:
        caption += f"; the dot marks the epoch the {metric_words} reads."
    if plot["table"]:
        caption += (f" {'Right' if plot['curves'] else 'The figure'}: mean {metric_words} per {vary_words}, "
                    f"± {num(plot['z'])} standard errors; green points form the tie set, the ring is your choice.")
    return Figure(uri, f"learning curves: {shown}" if shown else f"{metric_words} per {vary_words}", caption.strip())


def _draw_curves(ax, plot: dict, curve_words: str, vary_words: str) -> None:
    choice, best = plot["choice"], plot["best"]
    for value, curve in plot["curves"].items():
        is_choice = choice is not None and same(value, choice)
        is_best = best is not None and same(value, best)
        if is_choice and is_best:
            label, color, style = f"your choice = best, {num(value)}", "#2e7d32", "-"
        elif is_choice:
            label, color, style = f"your choice, {num(value)}", "#c62828" if best is not None else "#1565c0", "-"
        else:
            label, color, style = f"best, {num(value)}", "#1565c0", "--"
        epochs = [i + 1 for i, v in enumerate(curve) if v is not None]
        ys = [v for v in curve if v is not None]
        ax.plot(epochs, ys, style, color=color, label=label, linewidth=2)
        e = metric_epoch(curve, plot["metric"])
        if e is not None:
            ax.plot([e + 1], [curve[e]], "o", color=color, markersize=6)
    ax.set_xlabel("epoch")
    ax.set_ylabel(curve_words)
    ax.set_title(f"{curve_words} by {vary_words}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _draw_table(ax, plot: dict, metric_words: str, vary_words: str) -> None:
    rows = plot["table"]
    xs = [float(r["value"]) for r in rows]
    ys = [float(r["mean"]) for r in rows]
    errs = [plot["z"] * float(r.get("se") or 0.0) for r in rows]
    ax.errorbar(xs, ys, yerr=errs, fmt="none", ecolor="#9e9e9e", capsize=3, linewidth=1)
    groups = (("tie set", "#2e7d32", "o", lambda r: in_set(r["value"], plot["tie_set"])),
              ("other values", "#9e9e9e", "o", lambda r: not in_set(r["value"], plot["tie_set"]) and not _diverged(r)),
              ("diverged", "#9e9e9e", "x", lambda r: not in_set(r["value"], plot["tie_set"]) and _diverged(r)))
    for label, color, marker, member in groups:
        chosen = [r for r in rows if member(r)]
        if chosen:
            ax.scatter([float(r["value"]) for r in chosen], [float(r["mean"]) for r in chosen], c=color,
                       marker=marker, s=30, zorder=3, label=label)
    if plot["choice"] is not None:
        row = next((r for r in rows if same(r["value"], plot["choice"])), None)
        if row is not None:
            ax.scatter([float(row["value"])], [float(row["mean"])], s=160, facecolors="none",
                       edgecolors="#c62828", linewidths=2, zorder=4, label="your choice")
    if xs and all(x > 0 for x in xs) and max(xs) / min(xs) >= 10:
        ax.set_xscale("log")
    if xs:
        ax.set_xticks(xs, [num(r["value"]) for r in rows], fontsize=7, rotation=45 if len(xs) > 6 else 0)
        ax.minorticks_off()
    ax.set_xlabel(vary_words)
    ax.set_ylabel(metric_words)
    ax.set_title(f"{metric_words} per {vary_words}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _diverged(row: dict) -> bool:
    return bool(row.get("n_diverged")) and row.get("n_diverged") == row.get("n")

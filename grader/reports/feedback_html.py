"""One self-contained HTML feedback page per student: answers, points, expectations, curves, errors.

Everything a student wrote (answers, names, tracebacks of their code) is escaped: it is hostile
input. The scorer's feedback sentence says why; the artifact's explanation stands in when it is empty.
With hide_answers the page says right or wrong only: no expected value, no scorer sentence
(it may have been written with the expected value), and the figure shows only the student's
own choice.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from grader.reports.htmlkit import esc, img, new_figure, num, page, png_data_uri
from grader.reports.refcurves import (CURVE_WORDS, METRIC_CURVE, VARY_WORDS, grid_of, in_set, mean_curves, metric_epoch,
                              question_ref, same, student_choice)
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
METRIC_WORDS = {"final_train_acc": "final training accuracy", "best_test_acc": "best test accuracy",
                "final_test_acc": "final test accuracy", "best_train_acc": "best training accuracy"}
MAX_ANSWER_CHARS = 5000


def render_feedback_html(result: dict, spec, reference, *, hide_answers: bool = False,
                         executed_notebook: Any = None) -> str:
    """The student's feedback page as one HTML string (the caller writes it atomically).

    executed_notebook: a path or an nbformat notebook to take the failing cell's traceback from;
    by default result["executed"] when the run did not end as "graded".
    """
    student = str(result.get("student", "?"))
    parts = [_header(result, spec, student, hide_answers),
             _status(result, executed_notebook)]
    questions = result.get("questions") or {}
    for q in spec.questions:
        parts.append(_question(q, questions.get(q.id), spec, reference, hide_answers))
    return page(f"Lab {spec.assignment_id} feedback: {student}", "\n".join(p for p in parts if p))


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


def _header(result: dict, spec, student: str, hide: bool) -> str:
    total = result.get("total", 0)
    top = result.get("max", spec.max_points)
    lines = [f"<h1>Lab {esc(spec.assignment_id)}: {esc(spec.title)}</h1>",
             f"<p class=\"muted\">Feedback for <strong class=\"student\">{esc(student)}</strong></p>",
             f"<p class=\"score\">Score: <strong>{esc(num(total))} / {esc(num(top))}</strong></p>"]
    if result.get("review"):
        lines.append("<p class=\"review\">Some answers are flagged for manual review: "
                     "their points are provisional until an instructor checks them.</p>")
    if hide:
        lines.append("<p class=\"muted\">Expected answers are hidden: each question says right or wrong only.</p>")
    return "\n".join(lines)


def _status(result: dict, executed_notebook: Any) -> str:
    status = str(result.get("status", "graded"))
    if status == "graded":
        return ""
    reason = result.get("reason") or ""
    lines = ["<section class=\"box status-bad\" id=\"status\">",
             f"<h2>Your notebook was not graded normally: {esc(status)}</h2>"]
    if reason:
        lines.append(f"<p class=\"reason\">{esc(reason)}</p>")
    problems = [str(e) for e in result.get("errors") or []]
    if problems:
        lines.append("<ul class=\"errors\">" + "".join(f"<li>{esc(e)}</li>" for e in problems) + "</ul>")
    source = executed_notebook if executed_notebook is not None else result.get("executed")
    failed = failing_cell(source) if source else None
    if failed:
        lines.append(f"<p>It stopped in {esc(failed['label'])} with <code>{esc(failed['ename'])}</code>. "
                     "The traceback of your code (frames inside libraries hidden):</p>")
        lines.append(f"<pre class=\"traceback\">{esc(failed['traceback'])}</pre>")
    lines.append("</section>")
    return "\n".join(lines)


def _question(q, entry: dict | None, spec, reference, hide: bool) -> str:
    entry = entry or {"points": 0.0, "max": q.points, "verdict": "missing", "answer": None,
                      "expected": None, "feedback": "", "review": False}
    verdict = str(entry.get("verdict", "missing"))
    css = verdict if verdict in VERDICT_WORDS else "missing"
    qref = question_ref(reference, q.id)
    lines = [f"<section class=\"box question\" id=\"q-{esc(q.id)}\" data-qid=\"{esc(q.id)}\">",
             f"<h2><span class=\"qid\">{esc(q.id)}</span> "
             f"<span class=\"badge v-{css}\">{esc(VERDICT_WORDS.get(verdict, verdict))}</span> "
             f"<span class=\"points\">{esc(num(entry.get('points', 0)))} / "
             f"{esc(num(entry.get('max', q.points)))}</span></h2>"]
    if q.prompt:
        lines.append(f"<p class=\"prompt muted\">{esc(q.prompt)}</p>")
    lines.append(f"<p>Your answer:</p><div class=\"answer\">{esc(_show_answer(entry.get('answer')))}</div>")
    feedback = "" if hide else str(entry.get("feedback") or "")
    if q.kind == "optimum" and "not on the grid" not in feedback:
        lines.append(_snap_note(entry, qref, spec, q.id))
    if hide:
        lines.append(f"<p class=\"feedback\">{esc(HIDDEN_SENTENCES.get(verdict, ''))}</p>")
    else:
        lines.append(_expected(q, entry, qref))
        if feedback:
            lines.append(f"<p class=\"feedback\">{esc(feedback)}</p>")
        elif qref.get("explanation"):
            lines.append(f"<p class=\"why\">Why: {esc(qref['explanation'])}</p>")
    if q.kind == "optimum":
        plot = optimum_plot(q, entry, spec, reference, hide_answers=hide)
        if plot:
            lines.append(_figure(plot))
    if entry.get("review"):
        lines.append("<p class=\"review\">Flagged for manual review: these points are provisional "
                     "until an instructor checks this answer.</p>")
    override = entry.get("override")
    if isinstance(override, dict):
        comment = str(override.get("comment") or "")
        lines.append(f"<p class=\"override\">Points set by your instructor: {esc(num(override.get('points')))}"
                     f"{' — ' + esc(comment) if comment else ''}</p>")
    lines.append("</section>")
    return "\n".join(line for line in lines if line)


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


def _snap_note(entry: dict, qref: dict, spec, qid: str) -> str:
    answer = entry.get("answer")
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        return ""
    choice = student_choice(answer, grid_of(qref, spec, qid), spec.snap)
    if choice is None:
        return "<p class=\"snap\">Your answer could not be read as a number.</p>"
    if not choice["snapped"]:
        return ""
    scale = " (in log scale)" if spec.snap == "log" and choice["value"] > 0 else ""
    return (f"<p class=\"snap\">{esc(num(choice['value']))} is not on the grid of the sweep; it was graded as "
            f"{esc(num(choice['grid_value']))}, the nearest grid value{scale}.</p>")


def _expected(q, entry: dict, qref: dict) -> str:
    expected = entry.get("expected")
    if q.kind == "optimum":
        tie = expected if isinstance(expected, list) and expected else qref.get("tie_set") or []
        if not tie:
            return ""
        best = qref.get("best")
        best_txt = f" (best: {esc(num(float(best)))})" if best is not None else ""
        return (f"<p class=\"expected\"><strong>Expected:</strong> a value in the tie set "
                f"{{{esc(', '.join(num(float(t)) for t in tie))}}}{best_txt}.</p>")
    if q.kind == "yesno":
        truth = expected if isinstance(expected, bool) else qref.get("truth")
        if not isinstance(truth, bool):
            return ""
        return f"<p class=\"expected\"><strong>Expected:</strong> {'yes' if truth else 'no'}, with a reason.</p>"
    return ""


def _figure(plot: dict) -> str:
    """The curves travel as [value, curve] pairs: JSON would turn their float keys into strings."""
    return _figure_cached(json.dumps({**plot, "curves": list(plot["curves"].items())}, sort_keys=True, default=str))


@functools.lru_cache(maxsize=512)
def _figure_cached(plot_json: str) -> str:
    """A class shares a handful of (question, choice) figures: each is drawn once per process."""
    plot = json.loads(plot_json)
    plot["curves"] = {value: curve for value, curve in plot["curves"]}
    return _draw_figure(plot)


def _draw_figure(plot: dict) -> str:
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
    return img(uri, f"learning curves: {shown}" if shown else f"{metric_words} per {vary_words}", caption.strip())


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

"""The class report: score distribution, per-question outcomes and answer choices, review queue, look-alikes.

class_summary returns plain JSON-ready data (OUT/summary.json); render_summary_html draws the same
numbers (OUT/summary.html). Every number cell of the HTML carries the JSON path it shows
(data-key, a JSON path with / between keys), so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Iterable

from grader.reports.htmlkit import esc, img, new_figure, num, page, png_data_uri
from grader.reports.refcurves import grid_of, in_set, question_ref, same, student_choice
from grader.assessment.similarity import MEASURE, MIN_WORDS, copy_threshold, similar_pairs

VERDICTS = ("right", "partly", "wrong", "review", "missing")
MAX_BINS = 20


def class_summary(results: Iterable[dict], spec, reference, *, similarity_threshold: float | None = None,
                  similarity_min_words: int = MIN_WORDS) -> dict:
    """Numbers for the whole class. Scores count every submission (failed ones with their total,
    normally 0); per-question numbers count the submissions that have that question scored."""
    results = sorted(results, key=lambda r: str(r.get("student", "")))
    top = float(spec.max_points)
    similarity_threshold = copy_threshold(spec) if similarity_threshold is None else similarity_threshold
    return {
        "assignment": spec.assignment_id,
        "title": spec.title,
        "max": _r(top),
        "scores": _scores([float(r.get("total") or 0.0) for r in results], top),
        "status": _counts(str(r.get("status", "graded")) for r in results),
        "questions": {q.id: _question(q, results, spec, reference) for q in spec.questions},
        "review": [{"student": str(r.get("student", "")),
                    "questions": [qid for qid, e in (r.get("questions") or {}).items() if e.get("review")]}
                   for r in results if r.get("review") or any(e.get("review") for e in (r.get("questions") or {}).values())],
        "similarity": {"measure": MEASURE, "threshold": similarity_threshold, "min_words": similarity_min_words},
        "similar": [p._asdict() for p in similar_pairs(results, spec, threshold=similarity_threshold,
                                                        min_words=similarity_min_words)],
    }


def render_summary_html(summary: dict, *, title: str | None = None) -> str:
    """The class report page: histogram, tables, answer-distribution charts, review queue, look-alikes."""
    title = title or f"Lab {summary.get('assignment', '')}: {summary.get('title', '')} — class report"
    parts = [f"<h1>{esc(title)}</h1>", _scores_html(summary), _status_html(summary),
             _questions_html(summary), _review_html(summary), _similar_html(summary)]
    return page(title, "\n".join(parts))


# numbers --------------------------------------------------------------------------------------

def _r(x: float) -> float:
    return round(float(x), 3)


def _counts(items: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return dict(sorted(counts.items()))


def _scores(totals: list[float], top: float) -> dict:
    width = max(1, math.ceil(top / MAX_BINS)) if top > 0 else 1
    edges = [float(e) for e in range(0, int(math.ceil(top / width)) * width + 1, width)] or [0.0, 1.0]
    if len(edges) < 2:
        edges.append(edges[0] + width)
    counts = [0] * (len(edges) - 1)
    for t in totals:
        i = int((min(max(t, edges[0]), edges[-1]) - edges[0]) // width)
        counts[min(i, len(counts) - 1)] += 1
    stats = {"count": len(totals), "mean": None, "median": None, "min": None, "max": None}
    if totals:
        stats.update(mean=_r(statistics.fmean(totals)), median=_r(statistics.median(totals)),
                     min=_r(min(totals)), max=_r(max(totals)))
    stats["histogram"] = {"edges": edges, "counts": counts}
    return stats


def _question(q, results: list[dict], spec, reference) -> dict:
    entries = [(r, (r.get("questions") or {}).get(q.id)) for r in results]
    entries = [(r, e) for r, e in entries if isinstance(e, dict)]
    points = [float(e.get("points") or 0.0) for _, e in entries]
    verdicts = {v: 0 for v in VERDICTS}
    for _, e in entries:
        v = str(e.get("verdict", "missing"))
        verdicts[v] = verdicts.get(v, 0) + 1
    out = {
        "kind": q.kind,
        "max": _r(q.points),
        "n": len(entries),
        "points_mean": _r(statistics.fmean(points)) if points else None,
        "verdicts": verdicts,
        "overridden": sum(1 for _, e in entries if e.get("override")),
        "review": sum(1 for _, e in entries if e.get("review")),
    }
    if q.kind == "optimum":
        out["answers"] = _answer_distribution(q, [e for _, e in entries], spec, reference)
    return out


def _answer_distribution(q, entries: list[dict], spec, reference) -> dict:
    """How many chose each grid value (after snapping), and which values are in the tie set."""
    qref = question_ref(reference, q.id)
    grid = grid_of(qref, spec, q.id)
    tie_set = [float(t) for t in qref.get("tie_set") or []]
    best = qref.get("best")
    rows = [{"value": g, "count": 0, "in_tie_set": in_set(g, tie_set),
             "best": best is not None and same(g, best)} for g in grid]
    unanswered = unreadable = snapped = 0
    for e in entries:
        answer = e.get("answer")
        if answer is None or (isinstance(answer, str) and not answer.strip()):
            unanswered += 1
            continue
        choice = student_choice(answer, grid, spec.snap)
        if choice is None:
            unreadable += 1
            continue
        snapped += choice["snapped"]
        next(r for r in rows if same(r["value"], choice["grid_value"]))["count"] += 1
    return {"vary": qref.get("vary") or spec.sweeps[q.sweep].vary, "metric": qref.get("metric") or q.metric,
            "grid": rows, "unanswered": unanswered, "unreadable": unreadable, "snapped": snapped}


# html -----------------------------------------------------------------------------------------

def _cell(value: Any, key: str) -> str:
    return f"<td class=\"num\" data-key=\"{esc(key)}\">{esc(num(value))}</td>"


def _scores_html(summary: dict) -> str:
    s = summary["scores"]
    head = "".join(f"<th class=\"num\">{h}</th>" for h in ("submissions", "mean", "median", "min", "max", "out of"))
    cells = "".join(_cell(s[k], f"scores/{k}") for k in ("count", "mean", "median", "min", "max"))
    cells += _cell(summary["max"], "max")
    parts = ["<section id=\"scores\"><h2>Scores</h2>",
             f"<table><tr>{head}</tr><tr>{cells}</tr></table>"]
    hist = s["histogram"]
    if s["count"]:
        parts.append(img(_histogram_png(hist), "score histogram",
                         "Submissions per score bin (each bin includes its left edge; the last also its right)."))
    rows = "".join(f"<tr><td>{esc(num(lo))}–{esc(num(hi))}</td>{_cell(c, f'scores/histogram/counts/{i}')}</tr>"
                   for i, (lo, hi, c) in enumerate(zip(hist["edges"], hist["edges"][1:], hist["counts"])))
    parts.append(f"<table class=\"histogram\"><tr><th>score</th><th class=\"num\">submissions</th></tr>{rows}</table>")
    parts.append("</section>")
    return "\n".join(parts)


def _status_html(summary: dict) -> str:
    rows = "".join(f"<tr><td>{esc(k)}</td>{_cell(v, f'status/{k}')}</tr>" for k, v in summary["status"].items())
    return (f"<section id=\"status\"><h2>Outcomes</h2><table><tr><th>status</th><th class=\"num\">submissions</th></tr>"
            f"{rows}</table></section>")


def _questions_html(summary: dict) -> str:
    head = ("<tr><th>question</th><th>kind</th><th class=\"num\">n</th><th class=\"num\">mean points</th>"
            "<th class=\"num\">max</th>" + "".join(f"<th class=\"num\">{v}</th>" for v in VERDICTS)
            + "<th class=\"num\">overridden</th></tr>")
    rows = []
    for qid, q in summary["questions"].items():
        key = f"questions/{qid}"
        rows.append(f"<tr data-qid=\"{esc(qid)}\"><td>{esc(qid)}</td><td>{esc(q['kind'])}</td>"
                    + _cell(q["n"], f"{key}/n") + _cell(q["points_mean"], f"{key}/points_mean")
                    + _cell(q["max"], f"{key}/max")
                    + "".join(_cell(q["verdicts"].get(v, 0), f"{key}/verdicts/{v}") for v in VERDICTS)
                    + _cell(q["overridden"], f"{key}/overridden") + "</tr>")
    parts = ["<section id=\"questions\"><h2>Questions</h2>", f"<table>{head}{''.join(rows)}</table>"]
    for qid, q in summary["questions"].items():
        if "answers" in q:
            parts.append(_distribution_html(qid, q["answers"]))
    parts.append("</section>")
    return "\n".join(parts)


def _distribution_html(qid: str, a: dict) -> str:
    key = f"questions/{qid}/answers"
    rows = "".join(
        f"<tr><td>{esc(num(r['value']))}</td>{_cell(r['count'], f'{key}/grid/{i}/count')}"
        f"<td>{'in the tie set' if r['in_tie_set'] else ''}{' (best)' if r['best'] else ''}</td></tr>"
        for i, r in enumerate(a["grid"]))
    extra = "".join(f"<tr><td>{label}</td>{_cell(a[k], f'{key}/{k}')}<td></td></tr>"
                    for k, label in (("unanswered", "not answered"), ("unreadable", "not a number"),
                                     ("snapped", "of them snapped to the grid")))
    chart = img(_distribution_png(qid, a), f"answers to {qid}",
                "Answers per grid value after snapping; green bars and labels are the tie set, the outlined bar the best.") if a["grid"] else ""
    return (f"<div class=\"box distribution\" data-qid=\"{esc(qid)}\"><h3>{esc(qid)}: choices of "
            f"{esc(a['vary'])} ({esc(a['metric'])})</h3>{chart}"
            f"<table><tr><th>{esc(a['vary'])}</th><th class=\"num\">students</th><th></th></tr>{rows}{extra}</table></div>")


def _review_html(summary: dict) -> str:
    if not summary["review"]:
        return "<section id=\"review\"><h2>Flagged for review</h2><p>None.</p></section>"
    rows = "".join(f"<tr><td>{esc(r['student'])}</td><td>{esc(', '.join(r['questions']))}</td></tr>"
                   for r in summary["review"])
    return (f"<section id=\"review\"><h2>Flagged for review ({len(summary['review'])})</h2>"
            f"<table><tr><th>student</th><th>questions</th></tr>{rows}</table></section>")


def _similar_html(summary: dict) -> str:
    sim = summary["similarity"]
    how = (f"<p class=\"muted\">{esc(sim['measure'])}; pairs at or above {esc(num(sim['threshold']))}, "
           f"answers of at least {esc(num(sim['min_words']))} words. A hint for a human, not a verdict.</p>")
    if not summary["similar"]:
        return f"<section id=\"similar\"><h2>Near-duplicate answers</h2>{how}<p>None.</p></section>"
    rows = "".join(f"<tr><td>{esc(p['question'])}</td><td>{esc(p['student_a'])}</td><td>{esc(p['student_b'])}</td>"
                   f"{_cell(p['score'], f'similar/{i}/score')}</tr>" for i, p in enumerate(summary["similar"]))
    return (f"<section id=\"similar\"><h2>Near-duplicate answers ({len(summary['similar'])})</h2>{how}"
            f"<table><tr><th>question</th><th>student</th><th>student</th><th class=\"num\">similarity</th></tr>"
            f"{rows}</table></section>")


def _histogram_png(hist: dict) -> str:
    fig = new_figure(6.0, 2.8)
    ax = fig.subplots()
    edges, counts = hist["edges"], hist["counts"]
    ax.bar(edges[:-1], counts, width=[hi - lo for lo, hi in zip(edges, edges[1:])], align="edge",
           color="#1565c0", edgecolor="white")
    ax.set_xlabel("total points")
    ax.set_ylabel("submissions")
    ax.set_xlim(edges[0], edges[-1])
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(axis="y", alpha=0.3)
    return png_data_uri(fig)


def _distribution_png(qid: str, a: dict) -> str:
    fig = new_figure(max(4.0, 0.6 * len(a["grid"]) + 1.5), 2.8)
    ax = fig.subplots()
    labels = [num(r["value"]) for r in a["grid"]]
    colors = ["#2e7d32" if r["in_tie_set"] else "#9e9e9e" for r in a["grid"]]
    ax.bar(range(len(labels)), [r["count"] for r in a["grid"]], color=colors,
           edgecolor=["black" if r["best"] else "white" for r in a["grid"]])
    ax.set_xticks(range(len(labels)), labels)
    for tick, r in zip(ax.get_xticklabels(), a["grid"]):
        if r["in_tie_set"]:
            tick.set_color("#2e7d32")
            tick.set_fontweight("bold")
    ax.set_xlabel(a["vary"])
    ax.set_ylabel("students")
    ax.set_title(qid, fontsize=10)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(axis="y", alpha=0.3)
    return png_data_uri(fig)

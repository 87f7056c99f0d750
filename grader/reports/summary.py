"""The class report: score distribution, per-question outcomes and answer choices, review queue, look-alikes,
and (where results carry a runs record) the grid coverage of the students' own runs.

class_summary returns plain JSON-ready data (OUT/summary.json); render_summary_html draws the same
numbers (OUT/summary.html, templates/summary.html over summary_page's plain data). Every number cell of the HTML carries the JSON path it shows
(data-key, a JSON path with / between keys), so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Iterable

from grader.reports.coverage import class_evidence, coverage_part
from grader.reports.htmlkit import Figure, new_figure, num, png_data_uri, render
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
        "evidence": class_evidence(results, spec),
    }


def render_summary_html(summary: dict, *, title: str | None = None) -> str:
    """The class report page: histogram, tables, answer-distribution charts, review queue, look-alikes."""
    return render("summary.html", page=summary_page(summary, title=title))


def summary_page(summary: dict, *, title: str | None = None) -> dict:
    """What the page shows, as plain data: each number formatted beside its JSON path, figures as data URIs."""
    title = title or f"Lab {summary.get('assignment', '')}: {summary.get('title', '')} — class report"
    return {
        "title": title,
        "scores": _scores_part(summary),
        "status": [{"name": k, "cell": _cell(v, f"status/{k}")} for k, v in summary["status"].items()],
        "verdicts": VERDICTS,
        "questions": [{"id": qid, "kind": q["kind"], "cells": _question_cells(qid, q)}
                      for qid, q in summary["questions"].items()],
        "distributions": [_distribution_part(qid, q["answers"]) for qid, q in summary["questions"].items()
                          if "answers" in q],
        "evidence": coverage_part(summary.get("evidence")),
        "review": [{"student": r["student"], "questions": ", ".join(r["questions"])} for r in summary["review"]],
        "similarity": {"measure": summary["similarity"]["measure"], "threshold": num(summary["similarity"]["threshold"]),
                       "min_words": num(summary["similarity"]["min_words"])},
        "similar": [{"question": p["question"], "student_a": p["student_a"], "student_b": p["student_b"],
                     "cell": _cell(p["score"], f"similar/{i}/score")} for i, p in enumerate(summary["similar"])],
    }


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


# page -----------------------------------------------------------------------------------------

def _cell(value: Any, key: str) -> dict:
    return {"text": num(value), "key": key}


def _scores_part(summary: dict) -> dict:
    s = summary["scores"]
    hist = s["histogram"]
    figure = (Figure(_histogram_png(hist), "score histogram",
                     "Submissions per score bin (each bin includes its left edge; the last also its right).")
              if s["count"] else None)
    return {
        "cells": [_cell(s[k], f"scores/{k}") for k in ("count", "mean", "median", "min", "max")]
                 + [_cell(summary["max"], "max")],
        "figure": figure,
        "bins": [{"range": f"{num(lo)}–{num(hi)}", "cell": _cell(c, f"scores/histogram/counts/{i}")}
                 for i, (lo, hi, c) in enumerate(zip(hist["edges"], hist["edges"][1:], hist["counts"]))],
    }


def _question_cells(qid: str, q: dict) -> list[dict]:
    key = f"questions/{qid}"
    return ([_cell(q["n"], f"{key}/n"), _cell(q["points_mean"], f"{key}/points_mean"), _cell(q["max"], f"{key}/max")]
            + [_cell(q["verdicts"].get(v, 0), f"{key}/verdicts/{v}") for v in VERDICTS]
            + [_cell(q["overridden"], f"{key}/overridden")])


def _distribution_part(qid: str, a: dict) -> dict:
    key = f"questions/{qid}/answers"
    figure = (Figure(_distribution_png(qid, a), f"answers to {qid}",
                     "Answers per grid value after snapping; green bars and labels are the tie set, the outlined bar the best.")
              if a["grid"] else None)
    return {
        "id": qid,
        "vary": a["vary"],
        "metric": a["metric"],
        "figure": figure,
        "rows": [{"value": num(r["value"]), "cell": _cell(r["count"], f"{key}/grid/{i}/count"),
                  "note": ("in the tie set" if r["in_tie_set"] else "") + (" (best)" if r["best"] else "")}
                 for i, r in enumerate(a["grid"])],
        "extra": [{"label": label, "cell": _cell(a[k], f"{key}/{k}")}
                  for k, label in (("unanswered", "not answered"), ("unreadable", "not a number"),
                                   ("snapped", "of them snapped to the grid"))],
    }


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

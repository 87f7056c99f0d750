"""What `grade` leaves for people and LMS scripts: gradebook CSV, results.json, feedback Markdown.

Everything is rebuilt from the per-student results and written atomically, so a reader never
sees half a file.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from grader.common.atomic import write_json_atomic, write_text_atomic
from grader.assessment.rescore import public
from grader.assessment.score import VERDICT_WORDS
from grader.common.csvcell import LINE_END, cell
from grader.common.errors import UserError
from grader.common.names import display, result_stem, terminal
from grader.common.templating import inert
from grader.common.text import one_line
from grader.reports.ownruns import evidence_section

RESULTS_FORMAT = "labgrader-results/1"
_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]|~#"} | {"<": "&lt;", ">": "&gt;", "&": "&amp;"})
# what GitHub-flavoured Markdown (and markdown-it's linkify) turns into a link by itself: `scheme://`,
# `www.` and an e-mail's `@`; a backslash before the ':', '.' or '@' keeps the text and drops the link
_AUTOLINK = re.compile(r"(?<=[A-Za-z])(?=://)|(?i:(?<=\bwww))(?=\.)|(?=@)")


def gradebook_columns(spec) -> list[str]:
    return ["student", "status", "reason", "total", "max", *[q.id for q in spec.questions], "review"]


def gradebook_csv(results: list[dict], spec) -> str:
    """One row per student: status, reason, total, max, points per question, review flag."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=gradebook_columns(spec), lineterminator=LINE_END)
    writer.writeheader()
    for r in results:
        row = {"student": cell(display(r["student"])), "status": cell(r["status"]), "reason": cell(display(r["reason"])),
               "total": cell(float(r["total"])), "max": cell(float(r["max"])), "review": cell(bool(r["review"]))}
        for q in spec.questions:
            qr = r["questions"].get(q.id)
            row[q.id] = cell(float(qr["points"])) if qr else ""
        writer.writerow(row)
    return buf.getvalue()


def results_document(header: dict, results: list[dict]) -> dict:
    return {"format": RESULTS_FORMAT, **header, "students": [public(r) for r in results]}


def feedback_markdown(result: dict, spec, hidden: bool, reference=None) -> str:
    """A student's feedback: status and reason, then each question's answer, points and why, then the
    student's own runs (with the reference's numbers beside them when a reference is given and not hidden)."""
    lines = [f"# Lab {spec.assignment_id}: {spec.title}: feedback for {_md(result['student'])}", ""]
    lines.append(f"- Status: **{result['status']}**" + (f": {_md(result['reason'])}" if result["reason"] else ""))
    waiting = [qid for qid, q in result["questions"].items() if q["review"]]
    total = f"- Points: **{_num(result['total'])} of {_num(result['max'])}**"
    if waiting:
        total += f" (provisional: {', '.join(waiting)} await an instructor's review)"
    lines.append(total)
    for problem in result.get("errors", []):
        lines.append(f"- Problem: {_md(problem)}")
    prompts = {q.id: q.prompt for q in spec.questions}
    for qid, q in result["questions"].items():
        lines += ["", f"## {qid}: {_num(q['points'])} of {_num(q['max'])} points, {VERDICT_WORDS[q['verdict']]}"
                  + (" (to be reviewed)" if q["review"] and q["verdict"] != "review" else "")]
        if prompts.get(qid):
            lines += ["", f"*{_md(prompts[qid])}*"]
        lines += ["", "Your answer:", "", _quote(q["answer"]), ""]
        if not hidden and q.get("expected") is not None:
            lines += [f"Expected: {_expected(q['expected'])}", ""]
        lines.append(_md(q["feedback"]))
        if q.get("override"):
            comment = q["override"].get("comment")
            lines += ["", f"Instructor: {_num(q['override']['points'])} points" + (f", {_md(comment)}" if comment else "")]
    lines += _evidence_lines(evidence_section(result, spec, reference, hidden=hidden or reference is None))
    return "\n".join(lines) + "\n"


def summary_table(results: list[dict]) -> str:
    """The gradebook as a plain text table for the terminal."""
    rows = [("student", "status", "points", "reason")]
    for r in results:
        pts = f"{_num(r['total'])}/{_num(r['max'])}" + (" *" if r["review"] else "")
        rows.append((terminal(r["student"]), terminal(r["status"]), pts, terminal(one_line(r["reason"], 70))))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    out = ["  ".join(row[i].ljust(widths[i]) for i in range(3)) + "  " + row[3] for row in rows]
    if any(r["review"] for r in results):
        out.append("* provisional: answers flagged for review (free text, yes/no reasons, values never trained) await an instructor")
    evidence = evidence_counts(results)
    if evidence["recorded"]:
        out.append(f"evidence: {evidence['recorded']} student(s) with a runs record from the training service; "
                   f"{evidence['own_runs']} answer(s) earned part of their points by following the student's own "
                   f"complete runs, {evidence['untried']} answer(s) for values the notebook never trained await review")
    return "\n".join(line.rstrip() for line in out)


def evidence_counts(results: list[dict]) -> dict:
    """How many students have service runs as evidence, and how often each evidence rule applied."""
    questions = [q for r in results for q in (r.get("questions") or {}).values()]
    return {"recorded": sum(1 for r in results if (r.get("runs_summary") or {}).get("evidence") == "service"),
            "own_runs": sum(1 for q in questions if q.get("evidence_rule") == "own-runs"),
            "untried": sum(1 for q in questions if q.get("evidence_rule") == "untried")}


def _written(path: Path, write, content) -> None:
    """write(path, content), an I/O failure (read-only OUT, full disk) as one line naming the file."""
    try:
        write(path, content)
    except OSError as e:
        raise UserError(f"{path}: cannot write: {e.strerror or e}") from None


def write_outputs(out: Path, header: dict, results: list[dict], spec) -> None:
    """grades.csv and results.json from the current results (cheap: called after every student)."""
    _written(out / "grades.csv", write_text_atomic, gradebook_csv(results, spec))
    _written(out / "results.json", write_json_atomic, results_document(header, results))


def write_feedback(out: Path, result: dict, spec, hidden: bool, reference=None) -> Path:
    """Markdown feedback always; the HTML page with learning curves when the reference is at hand."""
    folder = out / "feedback"
    folder.mkdir(parents=True, exist_ok=True)
    stem = result_stem(result)
    path = folder / f"{stem}.md"
    write_text_atomic(path, feedback_markdown(result, spec, hidden, reference))
    if reference is not None:
        from grader.reports.feedback_html import render_feedback_html

        executed = out / result["executed"] if result.get("executed") else None
        html = render_feedback_html(result, spec, reference, hide_answers=hidden,
                                    executed_notebook=executed if executed and executed.is_file() else None)
        write_text_atomic(folder / f"{stem}.html", html)
    return path


def write_class_report(out: Path, results: list[dict], spec, reference) -> None:
    """OUT/summary.json and OUT/summary.html: the same numbers, for scripts and for people."""
    from grader.reports.summary import class_summary, render_summary_html

    summary = class_summary(results, spec, reference)
    _written(out / "summary.json", write_json_atomic, summary)
    _written(out / "summary.html", write_text_atomic, render_summary_html(summary, title=f"Lab {spec.assignment_id}: {spec.title}"))


def _evidence_lines(section: dict | None) -> list[str]:
    """The "Your own runs" section in Markdown: the page's words and tables, without the figures."""
    if section is None:
        return []
    lines = ["", "## Your own runs", "", _md(section["intro"]), ""]
    lines += [f"- **{_md(s['qid'])}**: {_md(s['text'])}" for s in section["sentences"]]
    for sw in section["sweeps"]:
        lines += ["", f"### The {_md(sw['name'])} sweep: you trained {sw['tried']} values of the {_md(sw['vary'])}", ""]
        head = [sw["vary"]]
        for c in sw["columns"]:
            head += [f"your {c['words']} ({c['qids']})"] + ([] if sw["hidden"] else ["reference: mean ± SE"])
        lines += [_md_row(head + ["your answer"]), "|" + "---|" * (len(head) + 1)]
        for r in sw["rows"]:
            cells = [r["value"]]
            for c in r["cells"]:
                cells += [c["own"]] + ([] if sw["hidden"] else [c["ref"]])
            lines.append(_md_row(cells + [f"◀ {r['answer']}" if r["answer"] else ""]))
    if section["reported"]:
        lines += ["", "### Runs your notebook reported itself: shown, not evidence", "",
                  _md_row(["configuration", "epochs", "how", "calls", "the notebook's reason"]), "|---|---|---|---|---|"]
        lines += [_md_row([inert(r[k]) for k in ("config", "epochs", "served", "calls", "note")])
                  for r in section["reported"]]
    if section["note"]:
        lines += ["", _md(inert(section["note"]))]
    return lines


def _md_row(cells: list) -> str:
    return "| " + " | ".join(_md(c) for c in cells) + " |"


def _num(x) -> str:
    return f"{float(x):g}"


def _expected(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return "{" + ", ".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in value) + "}"
    return str(value)


def _quote(answer) -> str:
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        return "> (not answered)"
    text = answer if isinstance(answer, str) else str(answer).lower() if isinstance(answer, bool) else str(answer)
    text = text if len(text) <= 2000 else text[:1999] + "…"
    return "\n".join("> " + _md_line_start(_md(line)) for line in text.splitlines() or [""])


def _md_line_start(text: str) -> str:
    """A line that would open a list, quote or heading underline starts with a backslash instead."""
    numbered = re.match(r"^\d+(?=[.)])", text)
    if numbered:
        return numbered.group() + "\\" + text[numbered.end():]
    return "\\" + text if text[:1] in ("-", "+", "=", ">") else text


def _md(text) -> str:
    """Student text shown as text on one line: no HTML, links (autolinks included), images, emphasis or new
    Markdown lines, and no control or bidi characters (a `cat` of the file must not drive the terminal)."""
    return _AUTOLINK.sub("\\\\", " ".join(inert(display(text)).split()).translate(_MD_SPECIAL))



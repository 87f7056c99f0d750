"""`check`'s text output, from the same plain document `--json` prints.

Every line goes through `terminal`: answers, JSON keys and the kit's run notes are the student's
text and must not move the cursor, clear the screen or break a line.
"""

from __future__ import annotations

from grader.common.names import terminal

PLAIN_VERDICTS = ("Your answer is right:", "Your answer is wrong:")


def print_text(doc: dict, *, reveal: bool = False, write=print) -> None:
    def say(line: str) -> None:
        write(terminal(line))

    execution = doc.get("execution")
    if execution is not None:
        line = f"notebook: {execution['status']}"
        if execution["status"] != "ok" and execution["reason"]:
            line += f": {execution['reason']}"
        say(line)
        if not any(f["found"] for f in doc["files"]):
            say("notebook: wrote no answer files")
    _runs(doc.get("runs"), say, quiet=doc.get("reference") is not None)
    for f in doc["files"]:
        if not f["found"]:
            say(f"{f['file']}: not written (its questions count as not answered)")
            continue
        problems = len(f["errors"])
        say(f"{f['file']}: " + ("valid" if f["valid"] else f"invalid ({problems} problem{'s' if problems != 1 else ''})"))
        for e in f["errors"]:
            say(f"  {e}")
        if not f["readable"]:
            continue
        if doc.get("reference") is None:
            _self_questions(f["questions"], say)
        else:
            _scored_questions(f["questions"], say, reveal)
    if doc.get("reference") is None:
        say(_points_line(doc["points"]))
    else:
        note = " (provisional: answers marked 'needs review' are read by an instructor)" if doc["provisional"] else ""
        say(f"score: {doc['total']:g} of {doc['max']:g} points{note}")


def _runs(runs: dict | None, say, *, quiet: bool) -> None:
    """The runs the evidence comes from; answer files alone say they carry none (not under --reference)."""
    if runs is None or (runs["source"] is None and quiet):
        return
    say(runs["note"])
    for r in runs.get("not_counted", []):
        note = f" (the kit's note: {r['note']})" if r.get("note") else ""
        say(f"  not counted: {r['run']}: {r['why']}{note}")
    if runs.get("not_counted_more"):
        say(f"  not counted: {runs['not_counted_more']} more")


def _self_questions(questions: list[dict], say) -> None:
    for q in questions:
        label = f"{q['status']}: {q['reason']}" if q["status"] == "invalid" and q["reason"] else q["status"]
        say(f"  {q['key']}  {label}")
        for line in q["lines"]:
            say(f"     {line}")


def _scored_questions(questions: list[dict], say, reveal: bool) -> None:
    width = max((len(q["label"]) for q in questions), default=0)
    for q in questions:
        say(f"  {q['key']}  {q['label'].ljust(width)}  {q['points']:g}/{q['max']:g}")
        if reveal or not (q["verdict"] == "missing" or q["feedback"].startswith(PLAIN_VERDICTS)):
            say(f"     {q['feedback']}")
        for line in q.get("lines", []):
            say(f"     {line}")


def _points_line(points: dict) -> str:
    decided = points["reference"]
    parts = []
    if decided["questions"]:
        parts.append(f"the course's reference decides {decided['max']:g} point{'s' if decided['max'] != 1 else ''} "
                     f"({', '.join(decided['questions'])})")
    text = points["free_text"]
    if text["questions"]:
        parts.append(f"free text: {text['points']:g} of {text['max']:g}, provisional until an instructor reviews it")
    return "points: " + "; ".join(parts)

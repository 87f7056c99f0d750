"""Instructor overrides: a CSV of student,question,points,comment[,part] that sets a question's points.

The CSV comes from a person with a spreadsheet, so it is read leniently (BOM, spaces, header
case) and checked strictly: every bad row is one line naming the file and the line number.
The optional fifth column `part` (blank, or `reason` for a yes/no question) lets a row set the
reason's points only: the yes/no keeps its automatic point, which follows the reference.
`labgrader review` writes this file from its decisions (`overrides_csv`).
"""

from __future__ import annotations

import copy
import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from grader.common.csvcell import LINE_END, cell, uncell
from grader.common.errors import UserError

COLUMNS = ("student", "question", "points", "comment")
PART_COLUMNS = COLUMNS + ("part",)
PARTS = ("", "reason")


@dataclass(frozen=True)
class Override:
    student: str
    question: str
    points: float
    comment: str
    line: int
    part: str = ""


def load_overrides(path: str | Path, students: Iterable[str], question_max) -> list[Override]:
    """Parse and check an overrides CSV.

    question_max: {question id: max points}, or the Spec (its questions' points are used).
    """
    path = Path(path)
    maxima = _maxima(question_max)
    reason_max = _reason_maxima(question_max)
    known = set(students)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{path}: no such overrides file")
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: is not UTF-8 text (bad byte at offset {e.start})")
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    out: list[Override] = []
    seen: dict[tuple[str, str], int] = {}
    header_done = False
    end = 0
    try:
        for row in reader:
            line, end = end + 1, reader.line_num
            cells = [uncell(c.strip()) for c in row]
            if not any(cells):
                continue
            if not header_done:
                header = tuple(c.lower() for c in cells)
                if header not in (COLUMNS, COLUMNS[:3], PART_COLUMNS):
                    raise UserError(f"{path}:{line}: the header must be {','.join(COLUMNS)}[,part] (got {','.join(cells)})")
                width = len(header)
                header_done = True
                continue
            out.append(_row(path, line, cells, known, maxima, reason_max, seen, width))
    except csv.Error as e:
        raise UserError(f"{path}:{reader.line_num}: not valid CSV: {e}")
    if not header_done:
        raise UserError(f"{path}: empty; the header must be {','.join(COLUMNS)}")
    return out


def apply_overrides(result: dict, overrides: Iterable[Override], spec) -> dict:
    """A new result with the student's overrides applied; overrides for other students are ignored.

    The question gets the new points, its verdict from them (right if full, wrong if 0, else
    partly), no review flag, and `override: {points, comment}`; total and review are recomputed.
    """
    out = copy.deepcopy(result)
    mine = [o for o in overrides if o.student == result.get("student")]
    if not mine:
        return out
    questions = out.setdefault("questions", {})
    for o in mine:
        q = spec.question(o.question)
        entry = questions.setdefault(o.question, {"points": 0.0, "max": q.points, "verdict": "missing",
                                                  "answer": None, "expected": None, "feedback": "",
                                                  "review": False})
        top = float(entry.get("max", q.points))
        points = float(o.points)
        if o.part == "reason":
            points = round(_answer_part(entry, q) + points, 6)
        entry["points"] = points
        entry["verdict"] = "right" if math.isclose(points, top) else "wrong" if points == 0 else "partly"
        entry["review"] = False
        entry["override"] = {"points": points, "comment": o.comment}
        if o.part:
            entry["override"].update(part=o.part, part_points=float(o.points))
    out["total"] = round(sum(float(e.get("points", 0)) for e in questions.values()), 6)
    out["review"] = any(bool(e.get("review")) for e in questions.values())
    return out


def overrides_csv(overrides: Iterable[Override]) -> str:
    """The CSV `load_overrides` reads: today's four columns, plus `part` only when a row needs it."""
    rows = list(overrides)
    columns = PART_COLUMNS if any(o.part for o in rows) else COLUMNS
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=LINE_END)
    writer.writerow(columns)
    for o in rows:
        comment = " ".join(str(o.comment).replace("\0", " ").split())
        row = [cell(o.student), cell(o.question), f"{float(o.points):g}", cell(comment)]
        writer.writerow(row + [o.part] if columns is PART_COLUMNS else row)
    return buf.getvalue()


def _answer_part(entry: dict, q) -> float:
    """A yes/no question's automatic point, as scored: stored in `parts`, else from the answer and truth."""
    parts = entry.get("parts")
    if isinstance(parts, dict) and isinstance(parts.get("answer"), (int, float)):
        return float(parts["answer"])
    answer, truth = entry.get("answer"), entry.get("expected")
    if isinstance(answer, str):
        word = answer.strip().lower()[:3]
        said = True if word.startswith("yes") else False if word.startswith("no") else None
    else:
        said = answer if isinstance(answer, bool) else None
    return float(q.answer_points) if said is not None and isinstance(truth, bool) and said == truth else 0.0


def by_student(overrides: Iterable[Override]) -> dict[str, list[Override]]:
    grouped: dict[str, list[Override]] = {}
    for o in overrides:
        grouped.setdefault(o.student, []).append(o)
    return grouped


def _maxima(question_max) -> dict[str, float]:
    if hasattr(question_max, "questions"):
        return {q.id: float(q.points) for q in question_max.questions}
    if isinstance(question_max, Mapping):
        return {str(k): float(v) for k, v in question_max.items()}
    raise TypeError("question_max must be a mapping of question id to max points, or a Spec")


def _reason_maxima(question_max) -> dict[str, float]:
    if hasattr(question_max, "questions"):
        return {q.id: float(q.points - q.answer_points) for q in question_max.questions if q.kind == "yesno"}
    return {}


def _row(path: Path, line: int, cells: list[str], known: set[str], maxima: dict[str, float],
         reason_max: dict[str, float], seen: dict[tuple[str, str], int], width: int = len(COLUMNS)) -> Override:
    where = f"{path}:{line}"
    width = max(width, len(COLUMNS))
    if len(cells) > width:
        raise UserError(f"{where}: {len(cells)} columns, expected at most {width} "
                        "(quote a comment that holds a comma)")
    if len(cells) < 3:
        raise UserError(f"{where}: expected student,question,points[,comment]")
    student, question, raw_points = cells[:3]
    comment = cells[3] if len(cells) > 3 else ""
    part = cells[4].lower() if len(cells) > 4 else ""
    if student not in known:
        raise UserError(f"{where}: unknown student {student!r}")
    if question not in maxima:
        raise UserError(f"{where}: unknown question {question!r} (known: {', '.join(maxima)})")
    try:
        points = float(raw_points)
    except ValueError:
        points = math.nan
    if not math.isfinite(points):
        raise UserError(f"{where}: points {raw_points!r} is not a number")
    if points < 0:
        raise UserError(f"{where}: points {raw_points} is negative")
    if part not in PARTS:
        raise UserError(f"{where}: part {cells[4]!r} is not blank or 'reason'")
    if part == "reason" and question not in reason_max:
        raise UserError(f"{where}: part 'reason' is only for a yes/no question, and {question} is not one")
    top = reason_max[question] if part == "reason" else maxima[question]
    if points > top + 1e-9:
        what = f"the {top:g} of {question}'s reason" if part else f"the {top:g} of {question}"
        raise UserError(f"{where}: points {raw_points} is more than {what}")
    if (student, question) in seen:
        raise UserError(f"{where}: a second override for {student!r} {question} (first on line {seen[student, question]})")
    seen[student, question] = line
    return Override(student, question, points, comment, line, part)

"""Instructor overrides: a CSV of student,question,points,comment that replaces a question's points.

The CSV comes from a person with a spreadsheet, so it is read leniently (BOM, spaces, header
case) and checked strictly: every bad row is one line naming the file and the line number.
"""

from __future__ import annotations

import copy
import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from grader.common.csvcell import uncell
from grader.common.errors import UserError

COLUMNS = ("student", "question", "points", "comment")


@dataclass(frozen=True)
class Override:
    student: str
    question: str
    points: float
    comment: str
    line: int


def load_overrides(path: str | Path, students: Iterable[str], question_max) -> list[Override]:
    """Parse and check an overrides CSV.

    question_max: {question id: max points}, or the Spec (its questions' points are used).
    """
    path = Path(path)
    maxima = _maxima(question_max)
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
                if tuple(c.lower() for c in cells) not in (COLUMNS, COLUMNS[:3]):
                    raise UserError(f"{path}:{line}: the header must be {','.join(COLUMNS)} (got {','.join(cells)})")
                header_done = True
                continue
            out.append(_row(path, line, cells, known, maxima, seen))
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
        entry["points"] = float(o.points)
        entry["verdict"] = "right" if math.isclose(o.points, top) else "wrong" if o.points == 0 else "partly"
        entry["review"] = False
        entry["override"] = {"points": float(o.points), "comment": o.comment}
    out["total"] = round(sum(float(e.get("points", 0)) for e in questions.values()), 6)
    out["review"] = any(bool(e.get("review")) for e in questions.values())
    return out


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


def _row(path: Path, line: int, cells: list[str], known: set[str], maxima: dict[str, float],
         seen: dict[tuple[str, str], int]) -> Override:
    where = f"{path}:{line}"
    if len(cells) > len(COLUMNS):
        raise UserError(f"{where}: {len(cells)} columns, expected at most {len(COLUMNS)} "
                        "(quote a comment that holds a comma)")
    if len(cells) < 3:
        raise UserError(f"{where}: expected student,question,points[,comment]")
    student, question, raw_points = cells[:3]
    comment = cells[3] if len(cells) > 3 else ""
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
    if points > maxima[question] + 1e-9:
        raise UserError(f"{where}: points {raw_points} is more than the {maxima[question]:g} of {question}")
    if (student, question) in seen:
        raise UserError(f"{where}: a second override for {student!r} {question} (first on line {seen[student, question]})")
    seen[student, question] = line
    return Override(student, question, points, comment, line)

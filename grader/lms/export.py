"""`labgrader export`: OUT/results.json -> the files Canvas, Moodle or Gradescope import.

One function a format (to_canvas, to_moodle, to_gradescope), each taking the results document,
an optional roster (the LMS's own export, read by read_roster) and the LMS ids `materialize`
kept in OUT/lms/lms.json. A roster decides the rows: every roster student gets one, with an
explicit zero or a blank when they submitted nothing, and submissions the roster does not know
are reported rather than guessed into someone's row.

LMS ids are only written to the LMS they came from: OUT/lms/lms.json records the layout of the
download (`canvas` or `moodle`), and exporting to another target drops its ids (a Moodle
participant id is some other person's Canvas user id), so rows are then matched by name, login
or email through --roster, or left without an id and reported.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from grader.common.atomic import make_dir, write_json_atomic, write_text_atomic
from grader import SCHEMA_DIR
from grader.common.csvcell import LINE_END, cell, uncell
from grader.common.errors import UserError
from grader.common.names import display, result_stem, terminal
from grader.common.text import one_line

RESULTS_SCHEMA = SCHEMA_DIR / "results.schema.json"
GRADESCOPE_SCHEMA = SCHEMA_DIR / "gradescope-results.schema.json"
CANVAS_ID_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
CANVAS_POINTS_ROW = "    Points Possible"
CANVAS_TEST_STUDENTS = {"student, test", "test student"}
MOODLE_COLUMNS = ("Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
                  "Grade can be changed", "Last modified (submission)", "Last modified (grade)", "Feedback comments")
PARTICIPANT_RE = re.compile(r"^Participant (\d+)$")


@dataclass(frozen=True)
class Roster:
    """An LMS export as read: its columns in order, the student rows (all text), the rows before them."""

    kind: str
    path: str
    columns: list[str]
    rows: pd.DataFrame


# the command ---------------------------------------------------------------------------------

def export_command(args) -> int:
    out = Path(args.out)
    results = load_results(out)
    from grader.lms.lms_in import load_lms

    lms_doc = load_lms(out)
    lms = lms_for(lms_doc, args.to)
    if args.roster and args.to == "gradescope":
        raise UserError("--roster: Gradescope matches students itself; a roster applies to --to canvas or moodle")
    roster = read_roster(args.roster, args.to) if args.roster else None
    default = {"canvas": "canvas.csv", "moodle": "moodle.csv", "gradescope": "gradescope"}[args.to]
    dest = Path(args.dest) if args.dest else out / "export" / default
    writer = {"canvas": to_canvas, "moodle": to_moodle, "gradescope": to_gradescope}[args.to]
    report = writer(results, roster, lms=lms, assignment=args.assignment, missing=args.missing, dest=dest)
    report["lms_layout"] = lms_doc.get("layout")
    _say(report, args)
    return 0


def _say(report: dict, args) -> None:
    if report["unknown"]:
        names = ", ".join(f"{terminal(u['student'])} ({u['reason']})" for u in report["unknown"])
        print(f"labgrader: {len(report['unknown'])} submission(s) not in the roster, left out: {names}", file=sys.stderr)
    if report["no_lms_id"]:
        source = report.get("lms_layout")
        why = (f"the ids of this {source} download are not {report['target']} ids; "
               if source in ("canvas", "moodle") and source != report["target"] else "")
        print(f"labgrader: {len(report['no_lms_id'])} row(s) carry no LMS id, so the LMS cannot match them: "
              f"{', '.join(map(terminal, report['no_lms_id']))} ({why}pass --roster with the LMS's own export)", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps(report, indent=2))
        return
    print(f"{report['target']}: wrote {report['dest']} ({report['rows']} student(s))")
    if report["missing"]:
        grade = "zero" if report["missing_grade"] == "0" else "a blank grade"
        print(f"{len(report['missing'])} roster student(s) without a submission got {grade}: "
              + ", ".join(terminal(m["name"]) for m in report["missing"]))
    if report["review"]:
        print(f"{len(report['review'])} student(s) have provisional points awaiting review: "
              f"{', '.join(map(terminal, report['review']))}")


# inputs --------------------------------------------------------------------------------------

def lms_for(lms_doc: dict, target: str) -> dict:
    """load_lms's students as the target may use them: the LMS ids only when the download came from
    that very LMS (`layout`); otherwise every lms_user_id is None, so no row gets another LMS's id."""
    same = lms_doc.get("layout") == target
    students = {}
    for name, info in (lms_doc.get("students") or {}).items():
        if not isinstance(info, dict):
            continue
        uid = info.get("lms_user_id")
        uid = str(uid) if same and isinstance(uid, (str, int)) and not isinstance(uid, bool) and str(uid) else None
        students[name] = {**info, "lms_user_id": uid}
    return students


def _strict_json(text: str):
    """json.loads without Python's extensions: NaN, Infinity and numbers beyond a float are refused."""

    def constant(name):
        raise ValueError(f"{name} is not a JSON number")

    def number(text):
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"{text[:40]} is out of range")
        return value

    def integer(text):
        number(text)
        return int(text)

    return json.loads(text, parse_constant=constant, parse_float=number, parse_int=integer)


def load_results(out: str | Path) -> dict:
    """OUT/results.json, checked against schemas/results.schema.json; numbers must be finite."""
    path = Path(out) / "results.json"
    if not path.is_file():
        raise UserError(f"{path}: not found; run `labgrader grade ... --out {out}` first")
    try:
        doc = _strict_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{path}: unreadable: {one_line(str(e), 200)}")
    from jsonschema import Draft202012Validator

    try:
        schema = json.loads(RESULTS_SCHEMA.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load {RESULTS_SCHEMA}: {e}")
    error = next(iter(sorted(Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))), None)
    if error is not None:
        where = "/".join(map(str, error.absolute_path)) or "top level"
        raise UserError(f"{path}: not a labgrader results file: {where}: {error.message}")
    return doc


def read_roster(path: str | Path, kind: str) -> Roster:
    """A Canvas gradebook export or a Moodle grading worksheet; any defect is one line with its line number."""
    header, rows = _read_csv(Path(path))
    if kind == "canvas":
        return _canvas_roster(str(path), header, rows)
    if kind == "moodle":
        return _moodle_roster(str(path), header, rows)
    raise UserError(f"--roster: no roster format for {kind}")


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read the roster: {e.strerror or e}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise UserError(f"{path} line {line}: not UTF-8 text (save the roster as UTF-8 CSV)")
    reader = csv.reader(text.splitlines(keepends=True), strict=True)
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if any(c.strip() for c in row):
                rows.append((reader.line_num, [uncell(c) for c in row]))
    except csv.Error as e:
        raise UserError(f"{path} line {reader.line_num}: malformed CSV: {e}")
    if not rows:
        raise UserError(f"{path} line 1: empty roster")
    (_, header), body = rows[0], rows[1:]
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1 and h})
    if dupes:
        raise UserError(f"{path} line {rows[0][0]}: column {dupes[0]!r} appears twice")
    for line, row in body:
        if len(row) != len(header):
            raise UserError(f"{path} line {line}: expected {len(header)} fields as in the header, found {len(row)}")
    return header, body


def _require(path: str, header: list[str], needed, what: str) -> None:
    absent = [c for c in needed if c not in header]
    if absent:
        raise UserError(f"{path} line 1: missing column {absent[0]!r}; is this {what}?")


def _canvas_roster(path: str, header: list[str], body) -> Roster:
    _require(path, header, ("Student", "ID"), "a Canvas gradebook export (Student,ID,SIS User ID,SIS Login ID,Section,...)")
    i_student, i_id = header.index("Student"), header.index("ID")

    def user_id(line, row):
        student, uid = row[i_student].strip(), row[i_id].strip()
        if (not uid and student in ("Points Possible", "")) or student.lower() in CANVAS_TEST_STUDENTS:
            return None
        if not uid.isdigit():
            raise UserError(f"{path} line {line}: ID {uid!r} of {student!r} is not a Canvas user id (digits)")
        return uid, f"ID {uid}"

    return Roster("canvas", path, header, _frame(header, *_unique_rows(path, body, user_id)))


def _moodle_roster(path: str, header: list[str], body) -> Roster:
    _require(path, header, ("Identifier", "Full name", "Grade"), "a Moodle grading worksheet (Identifier,Full name,...)")
    i_ident = header.index("Identifier")

    def participant(line, row):
        ident = row[i_ident].strip()
        if not PARTICIPANT_RE.match(ident):
            raise UserError(f"{path} line {line}: Identifier {ident!r} is not 'Participant <number>'")
        return ident, ident

    return Roster("moodle", path, header, _frame(header, *_unique_rows(path, body, participant)))


def _unique_rows(path: str, body, identify) -> tuple[list, list]:
    """-> (rows, their line numbers) of a roster; identify(line, row) -> (key, how to name it) or None to
    skip the row, and a key seen twice is an error naming both lines."""
    kept, lines, seen = [], [], {}
    for line, row in body:
        found = identify(line, row)
        if found is None:
            continue
        key, shown = found
        if key in seen:
            raise UserError(f"{path} line {line}: {shown} appears twice (first on line {seen[key]})")
        seen[key] = line
        kept.append(row)
        lines.append(line)
    return kept, lines


def _frame(header: list[str], rows: list[list[str]], lines: list[int]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=header, dtype=str)
    frame.index = lines
    return frame


# matching ------------------------------------------------------------------------------------

def match_roster(students: list[dict], lms: dict, roster: Roster) -> tuple[dict, list[dict]]:
    """roster row label -> result, by LMS user id first, then by login/SIS id/email, then by name.

    A fallback key that fits several roster rows matches none: a wrong grade in someone else's
    row is worse than a reported leftover.
    """
    uid_col = "ID" if roster.kind == "canvas" else "Identifier"
    by_uid = {_uid(roster.kind, v): label for label, v in roster.rows[uid_col].items()}
    fallback: dict[str, set] = {}
    for label, row in roster.rows.iterrows():
        for key in _roster_keys(roster.kind, row):
            fallback.setdefault(key, set()).add(label)
    matched: dict = {}
    unknown: list[dict] = []
    for r in students:
        info = lms.get(r["student"], {})
        uid = info.get("lms_user_id")
        label, reason = None, "no roster row has this student's LMS id, login, id or name"
        if uid and uid in by_uid:
            label = by_uid[uid]
        else:
            hits = set().union(*[fallback.get(k, set()) for k in _student_keys(r["student"], info)])
            if len(hits) == 1:
                label = hits.pop()
            elif hits:
                reason = f"fits {len(hits)} roster rows; not guessed"
        if label is not None and label in matched:
            label, reason = None, f"same roster row as {matched[label]['student']}"
        if label is None:
            unknown.append({"student": r["student"], "reason": reason})
        else:
            matched[label] = r
    return matched, unknown


def _uid(kind: str, value: str) -> str:
    value = str(value).strip()
    m = PARTICIPANT_RE.match(value)
    return m.group(1) if kind == "moodle" and m else value


def _roster_keys(kind: str, row) -> set[str]:
    keys = set()
    for col in ("SIS Login ID", "SIS User ID", "Email address", "Username", "ID number", "Email"):
        v = str(row.get(col, "") or "").strip().lower()
        if v:
            keys.add(v)
            if "@" in v:
                keys.add(v.split("@")[0])
    name = str(row.get("Student" if kind == "canvas" else "Full name", "") or "")
    keys.add(_norm(name))
    if "," in name:
        last, first = name.split(",", 1)
        keys.add(_norm(first + last))
    return {k for k in keys if k}


def _student_keys(student: str, info: dict) -> set[str]:
    keys = {student.lower(), _norm(student), _norm(info.get("display_name") or "")}
    return {k for k in keys if k}


def _norm(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]", "", ascii_text.lower())


# Canvas --------------------------------------------------------------------------------------

def to_canvas(results: dict, roster: Roster | None = None, *, lms: dict | None = None, assignment: str = "Lab 7b",
              missing: str = "zero", dest: str | Path) -> dict:
    """Canvas gradebook import CSV: Student,ID,SIS User ID,SIS Login ID,Section,<Assignment> (<id>), then Points Possible."""
    lms = lms or {}
    students = results["students"]
    blank = _missing_value(missing)
    column = _canvas_column(roster, assignment)
    rows, missing_list, unknown, no_id = [], [], [], []
    if roster is not None:
        matched, unknown = match_roster(students, lms, roster)
        for label, row in roster.rows.iterrows():
            r = matched.get(label)
            rows.append({**{c: row.get(c, "") for c in CANVAS_ID_COLUMNS}, column: _num(r["total"]) if r else blank})
            if r is None:
                missing_list.append({"name": row["Student"], "id": row["ID"], "grade": blank})
    else:
        for r in students:
            info = lms.get(r["student"], {})
            uid = info.get("lms_user_id") or ""
            if not uid:
                no_id.append(r["student"])
            rows.append({"Student": display(info.get("display_name") or r["student"]), "ID": uid, "SIS User ID": "",
                         "SIS Login ID": "", "Section": "", column: _num(r["total"])})
    points = {**{c: "" for c in CANVAS_ID_COLUMNS}, "Student": CANVAS_POINTS_ROW, column: _num(results["max"])}
    frame = pd.DataFrame([_cells(points), *map(_cells, rows)], columns=[*CANVAS_ID_COLUMNS, column], dtype=str)
    frame.columns = [cell(c) for c in frame.columns]
    dest = Path(dest)
    _write(dest, frame.to_csv(index=False, lineterminator=LINE_END))
    return _report("canvas", dest, [dest], len(rows), missing_list, blank, unknown, no_id, students)


def _canvas_column(roster: Roster | None, assignment: str) -> str:
    """The roster's own `<Assignment> (<id>)` header when it has one, so Canvas updates that assignment."""
    if roster is not None:
        pattern = re.compile(rf"^{re.escape(assignment)} \(\d+\)$")
        for c in roster.columns:
            if pattern.match(c) or c == assignment:
                return c
    return assignment


# Moodle --------------------------------------------------------------------------------------

def to_moodle(results: dict, roster: Roster | None = None, *, lms: dict | None = None, assignment: str = "Lab 7b",
              missing: str = "zero", dest: str | Path) -> dict:
    """Moodle grading worksheet CSV (Identifier `Participant <id>`); with a roster, its columns and rows are kept."""
    lms = lms or {}
    students = results["students"]
    blank = _missing_value(missing)
    maximum = _num(results["max"])
    missing_list, unknown, no_id = [], [], []
    if roster is not None:
        matched, unknown = match_roster(students, lms, roster)
        columns = list(roster.columns) + [c for c in ("Maximum Grade", "Feedback comments") if c not in roster.columns]
        rows = []
        for label, row in roster.rows.iterrows():
            r = matched.get(label)
            out = {c: row.get(c, "") for c in columns}
            if r is not None:
                out.update({"Grade": _num(r["total"]), "Maximum Grade": maximum, "Feedback comments": _comment(r, assignment)})
            else:
                out.update({"Grade": blank, "Maximum Grade": out.get("Maximum Grade") or maximum})
                if blank:
                    out["Feedback comments"] = f"{assignment}: no submission."
                missing_list.append({"name": row["Full name"], "id": row["Identifier"], "grade": blank})
            rows.append(out)
    else:
        columns = list(MOODLE_COLUMNS)
        rows = []
        for r in students:
            info = lms.get(r["student"], {})
            uid = info.get("lms_user_id")
            if not uid:
                no_id.append(r["student"])
            rows.append({**{c: "" for c in columns}, "Identifier": f"Participant {uid}" if uid else "", "Full name": display(info.get("display_name") or r["student"]),
                         "Grade": _num(r["total"]), "Maximum Grade": maximum, "Grade can be changed": "Yes",
                         "Feedback comments": _comment(r, assignment)})
    frame = pd.DataFrame(list(map(_cells, rows)), columns=columns, dtype=str).fillna("")
    frame.columns = [cell(c) for c in frame.columns]
    dest = Path(dest)
    _write(dest, frame.to_csv(index=False, lineterminator=LINE_END))
    return _report("moodle", dest, [dest], len(rows), missing_list, blank, unknown, no_id, students)


def _comment(r: dict, assignment: str) -> str:
    parts = [f"{assignment}: {_num(r['total'])} of {_num(r['max'])} points."]
    if r["status"] != "graded":
        parts.append(f"Status {r['status']}: {r['reason']}." if r["reason"] else f"Status {r['status']}.")
    if r["questions"]:
        parts.append(" ".join(f"{q} {_num(v['points'])}/{_num(v['max'])};" for q, v in r["questions"].items()).rstrip(";") + ".")
    waiting = [q for q, v in r["questions"].items() if v["review"]]
    if waiting:
        parts.append(f"Provisional: {', '.join(waiting)} await review.")
    return " ".join(" ".join(parts).split())


# Gradescope ----------------------------------------------------------------------------------

def to_gradescope(results: dict, roster: Roster | None = None, *, lms: dict | None = None, assignment: str = "Lab 7b",
                  missing: str = "zero", dest: str | Path) -> dict:
    """DEST/<student>/results.json in Gradescope's autograder format, each checked against its schema."""
    if roster is not None:
        raise UserError("--roster: Gradescope matches students itself; a roster applies to --to canvas or moodle")
    dest = Path(dest)
    seen: dict[str, str] = {}
    for r in results["students"]:
        stem = result_stem(r)
        if stem in seen:
            raise UserError(f"results.json: students {terminal(seen[stem])} and {terminal(r['student'])} both have "
                            f"the file stem {terminal(stem)}, so one would overwrite the other in {dest}; nothing written")
        seen[stem] = r["student"]
    written = []
    for r in results["students"]:
        doc = gradescope_document(r, title=assignment)
        path = dest / result_stem(r) / "results.json"
        write_gradescope(path, doc)
        written.append(path)
    return _report("gradescope", dest, written, len(written), [], _missing_value(missing), [], [], results["students"])


def gradescope_document(r: dict, *, title: str = "Lab 7b", execution_time: float | None = None) -> dict:
    """One student's result as Gradescope shows it: a test per question, the status up top."""
    head = [f"{title}: {_num(r['total'])} of {_num(r['max'])} points."]
    if r["status"] != "graded":
        head.append(f"Status: {r['status']}" + (f": {r['reason']}" if r["reason"] else ""))
    head += [f"Problem: {p}" for p in r.get("errors", [])]
    waiting = [q for q, v in r["questions"].items() if v["review"]]
    if waiting:
        head.append(f"Provisional: {', '.join(waiting)} await an instructor's review.")
    tests = []
    for qid, q in r["questions"].items():
        lines = []
        if q.get("answer") is not None:
            lines.append(f"Your answer: {q['answer']}")
        if q.get("feedback"):
            lines.append(q["feedback"])
        if q["review"]:
            lines.append("Flagged for an instructor's review; these points are provisional.")
        tests.append({
            "name": qid, "name_format": "text", "number": qid,
            "score": float(q["points"]), "max_score": float(q["max"]),
            "status": "passed" if q["max"] > 0 and q["points"] >= q["max"] else "failed",
            "output": "\n".join(lines), "output_format": "text",
            "tags": [q["verdict"]] + (["review"] if q["review"] else []), "visibility": "visible",
        })
    seconds = r.get("duration_s", 0.0) if execution_time is None else execution_time
    return {
        "score": float(r["total"]), "execution_time": round(max(0.0, float(seconds)), 3),
        "output": "\n".join(head), "output_format": "text", "test_output_format": "text", "test_name_format": "text",
        "visibility": "visible", "stdout_visibility": "hidden",
        "extra_data": {"student": r["student"], "status": r["status"], "review": bool(r["review"])},
        "tests": tests,
    }


def gradescope_failure(reason: str, *, title: str = "Lab 7b", execution_time: float = 0.0) -> dict:
    """Score 0 with the reason: what Gradescope shows when grading could not finish."""
    return {
        "score": 0.0, "execution_time": round(max(0.0, float(execution_time)), 3),
        "output": f"{title}: 0 points. The submission could not be graded: {reason}",
        "output_format": "text", "visibility": "visible", "stdout_visibility": "hidden",
        "extra_data": {"status": "grader-failure"},
    }


def gradescope_errors(doc) -> list[str]:
    """Every way doc breaks schemas/gradescope-results.schema.json, one line each."""
    from jsonschema import Draft202012Validator

    schema = json.loads(GRADESCOPE_SCHEMA.read_text(encoding="utf-8"))
    return [f"{'/'.join(map(str, e.absolute_path)) or 'top level'}: {e.message}"
            for e in Draft202012Validator(schema).iter_errors(doc)]


def write_gradescope(path: str | Path, doc: dict) -> Path:
    problems = gradescope_errors(doc)
    if problems:
        raise UserError(f"{path}: would not be valid Gradescope results: {problems[0]}")
    path = Path(path)
    make_dir(path.parent)
    try:
        write_json_atomic(path, doc)
    except OSError as e:
        raise UserError(f"{path}: cannot write: {e.strerror or e}")
    return path


# shared --------------------------------------------------------------------------------------

def _report(target, dest, written, rows, missing, blank, unknown, no_id, students) -> dict:
    return {
        "target": target, "dest": str(dest), "written": [str(p) for p in written], "rows": rows,
        "missing": missing, "missing_grade": blank, "unknown": unknown, "no_lms_id": no_id,
        "review": [r["student"] for r in students if r["review"]],
    }


def _cells(row: dict) -> dict:
    """Every value of a row as a safe CSV cell (grader/common/csvcell.py)."""
    return {k: cell(display(v)) if isinstance(v, str) else cell(v) for k, v in row.items()}


def _missing_value(missing: str) -> str:
    if missing not in ("zero", "blank"):
        raise UserError(f"--missing {missing}: not zero or blank")
    return "0" if missing == "zero" else ""


def _num(x) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:.2f}".rstrip("0").rstrip(".")


def _write(dest: Path, text: str) -> None:
    make_dir(dest.parent)
    try:
        write_text_atomic(dest, text)
    except OSError as e:
        raise UserError(f"{dest}: cannot write: {e.strerror or e}")

"""`labgrader export`: Canvas and Moodle CSVs matched against a roster, Gradescope results.json."""

import csv
import errno
import io
import json
import os
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from grader.cli import main

ROOT = Path(__file__).resolve().parents[1]
GS_SCHEMA = json.loads((ROOT / "schemas" / "gradescope-results.schema.json").read_text())
RESULTS_SCHEMA = json.loads((ROOT / "schemas" / "results.schema.json").read_text())
QIDS = ["ex1.a", "ex1.b", "ex1.c", "ex1.d", "ex2.a", "ex2.b", "ex2.c", "ex2.d"]


def student(name: str, points: list[float], *, status="graded", reason="all answer files valid", review_on=()) -> dict:
    questions = {q: {"points": p, "max": 2, "verdict": "right" if p == 2 else ("partly" if p else "wrong"),
                     "answer": "0.1", "expected": [0.1], "feedback": f"{q}: expected 0.1", "review": q in review_on}
                 for q, p in zip(QIDS, points)}
    return {"student": name, "status": status, "reason": reason, "total": float(sum(points)), "max": 16.0,
            "questions": questions, "review": bool(review_on), "content_sha256": "a" * 64,
            "executed": None, "duration_s": 2.5}


def make_out(tmp_path: Path, students: list[dict], lms: dict | None = None, layout: str = "canvas") -> Path:
    out = tmp_path / "out"
    out.mkdir()
    doc = {"format": "labgrader-results/1", "assignment": "7b", "title": "Optimizing Neural Networks",
           "spec_sha256": "b" * 64, "created": "2026-11-25T00:00:00+00:00", "labgrader_version": "0.1.0",
           "reference": {"path": "ref.json", "sha256": "c" * 64, "demo": False, "device": "cpu",
                         "data_kind": "synthetic", "seeds": [0, 1, 2]},
           "options": {"no_execute": True, "hide_answers": False}, "max": 16.0, "students": students}
    Draft202012Validator(RESULTS_SCHEMA).validate(doc)
    (out / "results.json").write_text(json.dumps(doc))
    if lms is not None:
        (out / "lms").mkdir()
        (out / "lms" / "lms.json").write_text(json.dumps({"format": "labgrader-lms/1", "layout": layout,
                                                           "students": lms, "refused": []}))
    return out


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))


CANVAS_ROSTER = """\ufeffStudent,ID,SIS User ID,SIS Login ID,Section,Lab 6 (4241),Lab 7b (4242)
    Points Possible,,,,,10,16
"Doe, Jane",123,S1,jdoe,Sec A,9,
"Smith, Bob",789,S2,bsmith,Sec A,7,
"Lee, Ann",555,S3,alee,Sec B,10,
"Student, Test",999,,,,,
"""

CANVAS_CLASS = [student("doejane_123", [2, 2, 2, 2, 2, 2, 0, 0]),
                student("smithbob_789", [2, 1.5, 2, 2, 0, 0, 0, 0], review_on=("ex1.d",)),
                student("ghost_42", [2] * 8)]
CANVAS_LMS = {"doejane_123": {"display_name": "doejane", "lms_user_id": "123", "late": False},
              "smithbob_789": {"display_name": "smithbob", "lms_user_id": "789", "late": True},
              "ghost_42": {"display_name": "ghost", "lms_user_id": "42", "late": False}}


def test_canvas_csv_has_one_row_per_roster_student_and_reports_unknowns(tmp_path, capsys):
    out = make_out(tmp_path, CANVAS_CLASS, CANVAS_LMS)
    roster = tmp_path / "gradebook.csv"
    roster.write_text(CANVAS_ROSTER, encoding="utf-8")
    assert main(["export", str(out), "--to", "canvas", "--roster", str(roster), "--json"]) == 0
    captured = capsys.readouterr()
    rows = read_csv(out / "export" / "canvas.csv")
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Lab 7b (4242)"]
    assert rows[1] == ["    Points Possible", "", "", "", "", "16"]
    assert rows[2:] == [["Doe, Jane", "123", "S1", "jdoe", "Sec A", "12"],
                        ["Smith, Bob", "789", "S2", "bsmith", "Sec A", "7.5"],
                        ["Lee, Ann", "555", "S3", "alee", "Sec B", "0"]]
    report = json.loads(captured.out)
    assert [m["name"] for m in report["missing"]] == ["Lee, Ann"] and report["missing_grade"] == "0"
    assert [u["student"] for u in report["unknown"]] == ["ghost_42"]
    assert report["review"] == ["smithbob_789"]
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "ghost_42" in err[0] and "not in the roster" in err[0]


def test_canvas_missing_blank_and_fallback_matching_by_login(tmp_path, capsys):
    out = make_out(tmp_path, [student("alee", [1] * 8), student("Jane Doe", [2] * 8)])
    roster = tmp_path / "gradebook.csv"
    roster.write_text(CANVAS_ROSTER, encoding="utf-8")
    dest = tmp_path / "upload.csv"
    assert main(["export", str(out), "--to", "canvas", "--roster", str(roster), "--missing", "blank",
                 "--dest", str(dest)]) == 0
    rows = {r[0]: r[-1] for r in read_csv(dest)[2:]}
    assert rows == {"Doe, Jane": "16", "Smith, Bob": "", "Lee, Ann": "8"}
    text = capsys.readouterr().out
    assert "Smith, Bob" in text and "blank" in text


def test_canvas_without_roster_uses_lms_ids_and_a_plain_assignment_column(tmp_path, capsys):
    out = make_out(tmp_path, CANVAS_CLASS[:2] + [student("carol", [0] * 8)], CANVAS_LMS)
    assert main(["export", str(out), "--to", "canvas", "--assignment", "Lab 7b SGD"]) == 0
    rows = read_csv(out / "export" / "canvas.csv")
    assert rows[0][-1] == "Lab 7b SGD"
    assert [r[:2] + r[-1:] for r in rows[2:]] == [["doejane", "123", "12"], ["smithbob", "789", "7.5"], ["carol", "", "0"]]
    assert "carol" in capsys.readouterr().err


MOODLE_HEADER = ("Identifier,Full name,Email address,Status,Grade,Maximum Grade,Grade can be changed,"
                 "Last modified (submission),Last modified (grade),Feedback comments\n")


def test_moodle_worksheet_keeps_the_roster_and_fills_grade_and_feedback(tmp_path, capsys):
    students = [student("jane-doe_1234", [2] * 6 + [0, 0]),
                student("bob-roe_77", [0] * 8, status="timeout", reason="cell 5: still running after 600 s")]
    lms = {"jane-doe_1234": {"display_name": "Jane Doe", "lms_user_id": "1234", "late": False},
           "bob-roe_77": {"display_name": "Bob Roe", "lms_user_id": "77", "late": False}}
    out = make_out(tmp_path, students, lms, layout="moodle")
    roster = tmp_path / "worksheet.csv"
    roster.write_text(MOODLE_HEADER
                      + "Participant 1234,Jane Doe,jane@uni.edu,Submitted for grading,,16.00,Yes,\"Monday, 3 March 2026, 10:00 AM\",-,\n"
                      + "Participant 77,Bob Roe,bob@uni.edu,Submitted for grading,,16.00,Yes,-,-,\n"
                      + "Participant 5,Ann Lee,ann@uni.edu,No submission,,16.00,Yes,-,-,\n", encoding="utf-8")
    assert main(["export", str(out), "--to", "moodle", "--roster", str(roster)]) == 0
    rows = read_csv(out / "export" / "moodle.csv")
    assert rows[0] == MOODLE_HEADER.strip().split(",")
    by = {r[0]: dict(zip(rows[0], r)) for r in rows[1:]}
    assert list(by) == ["Participant 1234", "Participant 77", "Participant 5"]
    assert by["Participant 1234"]["Grade"] == "12"
    assert by["Participant 1234"]["Last modified (submission)"] == "Monday, 3 March 2026, 10:00 AM"
    assert by["Participant 1234"]["Feedback comments"].startswith("Lab 7b: 12 of 16 points.")
    assert by["Participant 77"]["Grade"] == "0" and "timeout" in by["Participant 77"]["Feedback comments"]
    assert by["Participant 5"]["Grade"] == "0"
    assert "Ann Lee" in capsys.readouterr().out


def test_moodle_without_roster_writes_participant_identifiers(tmp_path):
    out = make_out(tmp_path, [student("jane-doe_1234", [2] * 8)],
                   {"jane-doe_1234": {"display_name": "Jane Doe", "lms_user_id": "1234", "late": False}}, layout="moodle")
    assert main(["export", str(out), "--to", "moodle", "--dest", str(tmp_path / "m.csv")]) == 0
    rows = read_csv(tmp_path / "m.csv")
    row = dict(zip(rows[0], rows[1]))
    assert (row["Identifier"], row["Full name"], row["Grade"], row["Maximum Grade"]) == ("Participant 1234", "Jane Doe", "16", "16")


def test_gradescope_results_validate_against_the_schema(tmp_path, capsys):
    students = [student("alice", [2, 2, 1, 0, 2, 2, 2, 2], review_on=("ex1.d",)),
                student("bob", [0] * 8, status="error", reason="cell 3: NameError: name 'x' is not defined")]
    out = make_out(tmp_path, students)
    assert main(["export", str(out), "--to", "gradescope", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["written"]) == 2
    validator = Draft202012Validator(GS_SCHEMA)
    alice = json.loads((out / "export" / "gradescope" / "alice" / "results.json").read_text())
    bob = json.loads((out / "export" / "gradescope" / "bob" / "results.json").read_text())
    for doc in (alice, bob):
        assert list(validator.iter_errors(doc)) == []
    assert alice["score"] == 13.0 and alice["execution_time"] == 2.5
    assert [t["number"] for t in alice["tests"]] == QIDS
    assert [t["status"] for t in alice["tests"][:4]] == ["passed", "passed", "failed", "failed"]
    assert sum(t["score"] for t in alice["tests"]) == alice["score"]
    assert "review" in alice["tests"][3]["tags"]
    assert bob["score"] == 0 and "NameError" in bob["output"]


def test_the_schema_itself_is_valid_and_refuses_what_gradescope_would():
    Draft202012Validator.check_schema(GS_SCHEMA)
    v = Draft202012Validator(GS_SCHEMA)
    assert v.is_valid({"score": 1, "tests": [{"name": "x", "status": "passed"}], "leaderboard": [{"name": "t", "value": 1, "order": "asc"}]})
    assert not v.is_valid({})
    assert not v.is_valid({"score": 1, "visibility": "sometimes"})
    assert not v.is_valid({"score": 1, "tests": [{"status": "ok"}]})
    assert not v.is_valid({"score": 1, "output_format": "rtf"})


@pytest.mark.parametrize("text, where", [
    (CANVAS_ROSTER.replace('"Smith, Bob",789,S2,bsmith,Sec A,7,', '"Smith, Bob",789,S2,bsmith,Sec A,7,,extra'), "line 4: expected 7 fields"),
    ("Name,Login\nJane,jdoe\n", "line 1: missing column 'Student'"),
    (CANVAS_ROSTER.replace('"Lee, Ann",555', '"Lee, Ann",abc'), "line 5: ID 'abc'"),
    (CANVAS_ROSTER.replace('"Lee, Ann",555', '"Lee, Ann",123'), "line 5: ID 123 appears twice (first on line 3)"),
    ('Student,ID\n"Doe, Jane,123\n', "line 2: malformed CSV"),
    ("", "line 1: empty roster"),
])
def test_a_malformed_roster_is_one_line_with_its_line_number_and_exit_2(tmp_path, capsys, text, where):
    out = make_out(tmp_path, CANVAS_CLASS, CANVAS_LMS)
    roster = tmp_path / "roster.csv"
    roster.write_text(text, encoding="utf-8")
    assert main(["export", str(out), "--to", "canvas", "--roster", str(roster)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and where in err[0] and str(roster) in err[0]
    assert not (out / "export").exists()


def test_a_bad_moodle_identifier_and_a_non_utf8_roster_exit_2(tmp_path, capsys):
    out = make_out(tmp_path, CANVAS_CLASS)
    roster = tmp_path / "w.csv"
    roster.write_text(MOODLE_HEADER + "Jane Doe,Jane Doe,j@x,,,,,,,\n", encoding="utf-8")
    assert main(["export", str(out), "--to", "moodle", "--roster", str(roster)]) == 2
    assert "line 2: Identifier 'Jane Doe' is not 'Participant <number>'" in capsys.readouterr().err
    roster.write_bytes(MOODLE_HEADER.encode() + b"Participant 1,Ren\xe9e,,,,,,,,\n")
    assert main(["export", str(out), "--to", "moodle", "--roster", str(roster)]) == 2
    assert "line 2: not UTF-8" in capsys.readouterr().err


def test_export_without_results_or_with_a_foreign_file_exits_2(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--to", "canvas"]) == 2
    assert "results.json: not found" in capsys.readouterr().err
    (tmp_path / "results.json").write_text('{"students": []}')
    assert main(["export", str(tmp_path), "--to", "canvas"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a labgrader results file" in err[0]


def test_export_of_what_grade_wrote(tmp_path, capsys, monkeypatch):
    """The real pipeline's results.json (answer files scored with --no-execute) exports as is."""
    from grader_fixtures import RIGHT, install_fake_executor, write_artifact

    install_fake_executor(monkeypatch)
    subs = tmp_path / "subs"
    for name, data in RIGHT.items():
        (subs / "alee").mkdir(parents=True, exist_ok=True)
        (subs / "alee" / name).write_text(json.dumps(data))
    out = tmp_path / "graded"
    ref = write_artifact(tmp_path / "ref.json")
    assert main(["grade", str(subs), "--out", str(out), "--reference", str(ref), "--no-execute"]) == 0
    roster = tmp_path / "gradebook.csv"
    roster.write_text(CANVAS_ROSTER, encoding="utf-8")
    assert main(["export", str(out), "--to", "canvas", "--roster", str(roster)]) == 0
    rows = {r[0]: r[-1] for r in read_csv(out / "export" / "canvas.csv")[2:]}
    assert rows == {"Doe, Jane": "0", "Smith, Bob": "0", "Lee, Ann": "16"}


# ids of one LMS are never another LMS's ids ---------------------------------------------------

MOODLE_LMS = {"ann-lee_123": {"display_name": "Ann Lee", "lms_user_id": "123", "late": False}}


def test_moodle_ids_are_not_written_as_canvas_ids(tmp_path, capsys):
    """Moodle participant 123 is not Canvas user 123 (Jane Doe in CANVAS_ROSTER): no ID, and with a
    roster Ann Lee is matched by her name, never by the id into Jane's row."""
    out = make_out(tmp_path, [student("ann-lee_123", [2] * 8)], MOODLE_LMS, layout="moodle")
    assert main(["export", str(out), "--to", "canvas"]) == 0
    rows = read_csv(out / "export" / "canvas.csv")
    assert rows[2][:2] + rows[2][-1:] == ["Ann Lee", "", "16"]
    err = capsys.readouterr().err
    assert "ann-lee_123" in err and "moodle download are not canvas ids" in err
    roster = tmp_path / "gradebook.csv"
    roster.write_text(CANVAS_ROSTER, encoding="utf-8")
    assert main(["export", str(out), "--to", "canvas", "--roster", str(roster)]) == 0
    rows = {r[0]: r[-1] for r in read_csv(out / "export" / "canvas.csv")[2:]}
    assert rows == {"Doe, Jane": "0", "Smith, Bob": "0", "Lee, Ann": "16"}


def test_canvas_ids_are_not_written_as_moodle_participants(tmp_path, capsys):
    out = make_out(tmp_path, CANVAS_CLASS[:1], CANVAS_LMS)
    assert main(["export", str(out), "--to", "moodle"]) == 0
    rows = read_csv(out / "export" / "moodle.csv")
    row = dict(zip(rows[0], rows[1]))
    assert (row["Identifier"], row["Full name"], row["Grade"]) == ("", "doejane", "12")
    assert "canvas download are not moodle ids" in capsys.readouterr().err
    roster = tmp_path / "worksheet.csv"
    roster.write_text(MOODLE_HEADER + "Participant 123,Someone Else,se@uni.edu,,,16.00,Yes,-,-,\n", encoding="utf-8")
    assert main(["export", str(out), "--to", "moodle", "--roster", str(roster), "--missing", "blank"]) == 0
    rows = read_csv(out / "export" / "moodle.csv")
    assert dict(zip(rows[0], rows[1]))["Grade"] == ""
    assert "doejane_123" in capsys.readouterr().err


def test_a_gradebook_without_an_lms_layout_gives_no_ids(tmp_path):
    out = make_out(tmp_path, CANVAS_CLASS[:1], CANVAS_LMS, layout="folders")
    assert main(["export", str(out), "--to", "canvas"]) == 0
    assert read_csv(out / "export" / "canvas.csv")[2][1] == ""


# formula injection in headers ----------------------------------------------------------------

def test_an_assignment_name_that_is_a_formula_is_neutralised_in_the_header(tmp_path):
    out = make_out(tmp_path, CANVAS_CLASS[:1], CANVAS_LMS)
    assert main(["export", str(out), "--to", "canvas", "--assignment", "=1+2"]) == 0
    assert read_csv(out / "export" / "canvas.csv")[0][-1] == "'=1+2"
    roster = tmp_path / "gradebook.csv"
    roster.write_text(CANVAS_ROSTER.replace("Lab 7b (4242)", "'=1+2 (4242)"), encoding="utf-8")
    assert main(["export", str(out), "--to", "canvas", "--roster", str(roster), "--assignment", "=1+2"]) == 0
    rows = read_csv(out / "export" / "canvas.csv")
    assert rows[0][-1] == "'=1+2 (4242)" and rows[2][-1] == "12"
    worksheet = tmp_path / "worksheet.csv"
    worksheet.write_text(MOODLE_HEADER.strip() + ",@SUM(A1)\nParticipant 123,Jane Doe,j@x,,,16,Yes,-,-,,x\n", encoding="utf-8")
    assert main(["export", str(out), "--to", "moodle", "--roster", str(worksheet)]) == 0
    assert read_csv(out / "export" / "moodle.csv")[0][-1] == "'@SUM(A1)"


# tampered results.json -----------------------------------------------------------------------

@pytest.mark.parametrize("old, new", [
    ('"total": 12.0', '"total": NaN'),
    ('"total": 12.0', '"total": Infinity'),
    ('"total": 12.0', '"total": -Infinity'),
    ('"total": 12.0', '"total": 1e400'),
    ('"max": 16.0, "students"', '"max": NaN, "students"'),
])
@pytest.mark.parametrize("target", ["canvas", "moodle", "gradescope"])
def test_non_finite_numbers_in_results_json_are_refused(tmp_path, capsys, old, new, target):
    out = make_out(tmp_path, CANVAS_CLASS[:1], CANVAS_LMS)
    text = (out / "results.json").read_text()
    assert text.count(old) == 1
    (out / "results.json").write_text(text.replace(old, new))
    assert main(["export", str(out), "--to", target]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out / "results.json") in err[0] and "internal error" not in err[0]
    assert not (out / "export").exists()


def test_gradescope_refuses_two_students_with_one_file_stem(tmp_path, capsys):
    students = [{**student(name, [2] * 8), "file": "same"} for name in ("alice", "bob", "carol")]
    out = make_out(tmp_path, students)
    assert main(["export", str(out), "--to", "gradescope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "alice and bob" in err[0] and "file stem same" in err[0]
    assert not (out / "export").exists()


# read-only output ----------------------------------------------------------------------------

def read_only_below(monkeypatch, folder: Path) -> None:
    """Every atomic write below folder fails as on a read-only mount (root ignores chmod)."""
    from grader.common import atomic

    real = atomic.write_bytes_atomic

    def write(path, data):
        if Path(os.path.abspath(path)).is_relative_to(folder):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(Path(path).parent / f".{Path(path).name}.x.tmp"))
        return real(path, data)

    monkeypatch.setattr(atomic, "write_bytes_atomic", write)


@pytest.mark.parametrize("target", ["canvas", "moodle", "gradescope"])
def test_export_into_a_read_only_folder_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, target):
    out = make_out(tmp_path, CANVAS_CLASS, CANVAS_LMS)
    read_only_below(monkeypatch, out / "export")
    assert main(["export", str(out), "--to", target]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error" not in err[0]
    assert f"{out / 'export'}" in err[0] and "cannot write: Read-only file system" in err[0]


def test_grade_into_a_read_only_out_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    from grader_fixtures import RIGHT, install_fake_executor, write_artifact

    install_fake_executor(monkeypatch)
    subs = tmp_path / "subs"
    (subs / "alee").mkdir(parents=True)
    for name, data in RIGHT.items():
        (subs / "alee" / name).write_text(json.dumps(data))
    out = tmp_path / "graded"
    ref = write_artifact(tmp_path / "ref.json")
    assert main(["grade", str(subs), "--out", str(out), "--reference", str(ref), "--no-execute"]) == 0
    before = (out / "results.json").read_text()
    capsys.readouterr()
    read_only_below(monkeypatch, out)
    for extra in ([], ["--force"]):
        assert main(["grade", str(subs), "--out", str(out), "--reference", str(ref), "--no-execute", *extra]) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("labgrader:")]
        assert "internal error" not in err[-1]
        assert str(out) in err[-1] and "cannot write: Read-only file system" in err[-1]
    assert (out / "results.json").read_text() == before

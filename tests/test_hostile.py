"""Hostile submissions, as an attacker would craft them: each one in a class beside two good students.

For every case `grade` exits 0, every student gets a status, the good ones are graded,
summary.html and a Canvas export exist, and a rerun re-executes nothing and still exits 0.
Answer-file classes run with --no-execute (or the fake executor) to stay fast; the real
sandbox runs the markdown-outputs notebook in tests/test_hostile_sandbox.py.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from grader.cli import main
from grader.common.csvcell import cell, uncell
from grader.common.names import display, file_stem
from grader.common.walk import remove_tree
from grader_fixtures import RIGHT, grade_json, install_fake_executor, notebook, write_artifact

GOOD = ("ann", "bob")
DEPTH = 1000
LONG = "L" * 240


def good_answers(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in RIGHT.items():
        (folder / name).write_text(json.dumps(data), encoding="utf-8")


@pytest.fixture(autouse=True)
def _no_deep_chain_left_behind(tmp_path):
    """pytest's own clean-up of old tmp dirs recurses, so a 1,000-deep chain left in one breaks it at exit."""
    yield
    remove_tree(tmp_path)


def deep_chain(top: Path, depth: int = DEPTH) -> Path:
    """A chain of `depth` nested folders, made one level at a time (os.makedirs itself recurses)."""
    here = top
    for _ in range(depth):
        here = here / "d"
        here.mkdir()
    (here / "deep.txt").write_text("bottom")
    return here


def check_class(tmp_path: Path, source: Path, *extra: str, calls: list | None = None,
                attacker_status: set[str] | None = None) -> dict:
    """Grade, check the acceptance lines, export to Canvas, grade again; -> {student: result}."""
    ref = write_artifact(tmp_path / "ref.json")
    out = tmp_path / "out"
    argv = (str(source), "--out", str(out), "--reference", str(ref), *extra)
    code, summary = grade_json(*argv)
    assert code == 0
    students = {s["student"]: s for s in summary["students"]}
    assert len(students) == summary["graded_now"] + summary["reused"] == 3
    good = [s for n, s in students.items() if n.split("_")[0] in GOOD]
    assert len(good) == 2 and all(s["status"] == "graded" and s["total"] == 16 for s in good)
    attacker = next(s for n, s in students.items() if n.split("_")[0] not in GOOD)
    if attacker_status is not None:
        assert attacker["status"] in attacker_status, attacker
    assert "\n" not in attacker["reason"]
    assert (out / "summary.html").is_file() and json.loads((out / "summary.json").read_text())
    doc = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert [s["status"] for s in doc["students"]].count("graded") >= 2
    assert main(["export", str(out), "--to", "canvas"]) == 0
    rows = list(csv.reader(io.StringIO((out / "export" / "canvas.csv").read_text(encoding="utf-8"))))
    assert len(rows) == 2 + 3
    for r in doc["students"]:
        assert (out / "feedback" / f"{r['file']}.md").is_file()
        assert len(r["file"].encode()) <= 100
    before = len(calls) if calls is not None else None
    code, again = grade_json(*argv)
    assert code == 0 and again["graded_now"] == 0 and again["reused"] == 3
    if calls is not None:
        assert len(calls) == before
    assert {s["student"]: s["status"] for s in again["students"]} == {n: s["status"] for n, s in students.items()}
    return {"students": students, "attacker": attacker, "out": out, "doc": doc}


def answer_class(tmp_path: Path) -> Path:
    subs = tmp_path / "subs"
    for name in GOOD:
        good_answers(subs / name)
    return subs


# the five crash cases --------------------------------------------------------------------------

def test_a_markdown_cell_with_a_malformed_error_output_is_that_students_error(tmp_path, monkeypatch):
    calls = install_fake_executor(monkeypatch)
    subs = tmp_path / "subs"
    for name in GOOD:
        notebook(subs / name / "lab7b.ipynb", {"write": RIGHT})
    path = notebook(subs / "mallory" / "lab7b.ipynb", {"status": "error", "reason": "boom", "cell": 1})
    nb = json.loads(path.read_text())
    nb["cells"].insert(0, {"cell_type": "markdown", "metadata": {}, "source": "hi",
                           "outputs": [{"output_type": "error", "ename": "E", "evalue": "v", "traceback": 7}]})
    nb["cells"].append({"cell_type": "code", "metadata": {}, "source": "", "execution_count": None,
                        "outputs": [{"output_type": "error", "ename": "E", "evalue": "v", "traceback": 7}, 3]})
    path.write_text(json.dumps(nb))
    got = check_class(tmp_path, subs, calls=calls, attacker_status={"error"})
    assert len(calls) == 3
    page = (got["out"] / "feedback" / "mallory.html").read_text()
    assert "boom" in page


def test_an_answer_with_a_lone_surrogate_is_invalid_answers_and_check_says_so(tmp_path):
    subs = answer_class(tmp_path)
    (subs / "mallory").mkdir()
    raw = json.dumps({**RIGHT["7b_ex1.json"], "d": "more updates \ud800 help"}, ensure_ascii=True)
    assert "\\ud800" in raw
    (subs / "mallory" / "7b_ex1.json").write_text(raw, encoding="ascii")
    (subs / "mallory" / "7b_ex2.json").write_text(json.dumps(RIGHT["7b_ex2.json"]))
    got = check_class(tmp_path, subs, "--no-execute", attacker_status={"invalid-answers"})
    assert "not valid Unicode" in got["attacker"]["reason"] and "ex1.d" not in got["attacker"]["reason"]
    run = subprocess.run([sys.executable, "-m", "grader", "check", str(subs / "mallory" / "7b_ex1.json"),
                          "--reference", str(tmp_path / "ref.json")], capture_output=True, text=True)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "invalid" in run.stdout and "not valid Unicode" in run.stdout and "Traceback" not in run.stderr


def test_a_thousand_deep_folder_chain_in_a_student_folder(tmp_path):
    subs = answer_class(tmp_path)
    good_answers(subs / "mallory")
    deep_chain(subs / "mallory")
    got = check_class(tmp_path, subs, "--no-execute", attacker_status={"graded"})
    assert got["attacker"]["total"] == 16


def test_a_thousand_deep_chain_inside_an_lms_zip(tmp_path):
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for student in (*GOOD, "mallory"):
            for name, data in RIGHT.items():
                z.writestr(f"{student}/{name}", json.dumps(data))
        z.writestr("mallory/" + "d/" * DEPTH + "deep.txt", "bottom")
    got = check_class(tmp_path, archive, "--no-execute", attacker_status={"graded"})
    assert got["attacker"]["student"] == "mallory"


def test_a_student_folder_with_a_240_character_name(tmp_path):
    subs = answer_class(tmp_path)
    good_answers(subs / LONG)
    got = check_class(tmp_path, subs, "--no-execute", attacker_status={"graded"})
    attacker = next(r for r in got["doc"]["students"] if r["student"] not in GOOD)
    assert attacker["student"] == LONG and attacker["file"] == file_stem(LONG) != LONG
    assert (got["out"] / ".state" / f"{file_stem(LONG)}.json").is_file()


def test_a_canvas_file_name_with_a_230_character_student_name(tmp_path):
    archive = tmp_path / "canvas.zip"
    name = "m" * 230
    with zipfile.ZipFile(archive, "w") as z:
        for i, student in enumerate((*GOOD, name)):
            for f, data in RIGHT.items():
                z.writestr(f"{student}_{100 + i}_{500 + i}_{f}", json.dumps(data))
    got = check_class(tmp_path, archive, "--no-execute", attacker_status={"graded"})
    lms = json.loads((got["out"] / "lms" / "lms.json").read_text())
    assert any(v["display_name"] == name for v in lms["students"].values())
    canvas = (got["out"] / "export" / "canvas.csv").read_text()
    assert name in canvas


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses non-UTF-8 file names")
def test_a_folder_name_that_is_not_utf8(tmp_path):
    subs = answer_class(tmp_path)
    raw = os.fsencode(str(subs)) + b"/jos\xe9"
    os.mkdir(raw)
    for name, data in RIGHT.items():
        with open(raw + b"/" + name.encode(), "w") as f:
            f.write(json.dumps(data))
    got = check_class(tmp_path, subs, "--no-execute", attacker_status={"graded"})
    attacker = next(r for r in got["doc"]["students"] if r["student"] not in GOOD)
    assert attacker["student"] == "jos\ufffd"
    assert bytes.fromhex(attacker["student_hex"]) == b"jos\xe9"
    assert attacker["file"] == file_stem(os.fsdecode(b"jos\xe9"))
    assert "jos\ufffd" in (got["out"] / "grades.csv").read_text(encoding="utf-8")


# outputs safe to open ----------------------------------------------------------------------------

def test_names_and_text_are_escaped_in_csv_markdown_and_the_terminal(tmp_path, capsys):
    subs = answer_class(tmp_path)
    evil = "=HYPERLINK(x)\n# Injected heading\n- [click](javascript:alert(1)) <b>"
    good_answers(subs / evil)
    code, summary = grade_json(str(subs), "--out", str(tmp_path / "out"), "--reference",
                               str(write_artifact(tmp_path / "ref.json")), "--no-execute")
    assert code == 0
    out = tmp_path / "out"
    md = (out / "feedback" / f"{file_stem(evil)}.md").read_text()
    assert not any(line.startswith(("# Injected", "- [click")) for line in md.splitlines())
    assert md.splitlines()[0].endswith("\\=HYPERLINK(x) \\# Injected heading - \\[click\\](javascript:alert(1)) &lt;b&gt;") or \
        "\\# Injected heading" in md.splitlines()[0]
    assert "<b>" not in md
    grades = list(csv.DictReader(io.StringIO((out / "grades.csv").read_text())))
    assert {r["student"] for r in grades} == {"ann", "bob", "'" + evil}
    assert main(["export", str(out), "--to", "moodle"]) == 0
    for path in (out / "export" / "moodle.csv", out / "grades.csv"):
        for row in csv.reader(io.StringIO(path.read_text())):
            assert not any(c.startswith(("=", "+", "-", "@", "\t", "\r")) and not _number(c) for c in row), row
    capsys.readouterr()
    main(["grade", str(subs), "--out", str(out), "--reference", str(tmp_path / "ref.json"), "--no-execute"])
    table = capsys.readouterr().out
    assert "=HYPERLINK(x)\\n# Injected" in table


def test_the_markdown_feedback_shows_urls_controls_and_bidi_as_text(tmp_path):
    import mistune

    subs = answer_class(tmp_path)
    name = "eve\u202ereversed"
    good_answers(subs / name)
    answer = {**RIGHT["7b_ex1.json"], "d": "see https://evil.example/x and www.evil.example, mail a@evil.example \x1bc\x07 \u202edone"}
    (subs / name / "7b_ex1.json").write_text(json.dumps(answer), encoding="utf-8")
    code, _ = grade_json(str(subs), "--out", str(tmp_path / "out"), "--reference",
                         str(write_artifact(tmp_path / "ref.json")), "--no-execute")
    assert code == 0
    md = (tmp_path / "out" / "feedback" / f"{file_stem(name)}.md").read_text()
    assert not [c for c in md if (ord(c) < 0x20 and c != "\n") or c == "\u202e"], "no control or bidi character left"
    assert "[U+202E\\]reversed" in md.splitlines()[0] and "␛c␇" in md
    html = mistune.create_markdown(plugins=["url"])(md)
    assert "<a " not in html and "https://evil.example/x" in html and "a@evil.example" in html


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def test_overrides_and_rosters_read_back_names_the_writers_neutralised(tmp_path):
    subs = tmp_path / "subs"
    for name in ("-ana", "@bob", "+cy", "=dee"):
        good_answers(subs / name)
    out = tmp_path / "out"
    ref = write_artifact(tmp_path / "ref.json")
    assert main(["grade", str(subs), "--out", str(out), "--reference", str(ref), "--no-execute"]) == 0
    gradebook = list(csv.DictReader(io.StringIO((out / "grades.csv").read_text())))
    overrides = tmp_path / "overrides.csv"
    with open(overrides, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "question", "points", "comment"])
        for row in gradebook:
            w.writerow([row["student"], "ex1.d", "1", "=cmd|' /C calc'!A0"])
    assert {r["student"] for r in gradebook} == {"'-ana", "'@bob", "'+cy", "'=dee"}
    assert main(["grade", str(subs), "--out", str(out), "--reference", str(ref), "--no-execute",
                 "--overrides", str(overrides)]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert {r["student"]: r["total"] for r in doc["students"]} == {n: 15 for n in ("-ana", "@bob", "+cy", "=dee")}
    assert main(["export", str(out), "--to", "canvas"]) == 0
    roster = out / "export" / "canvas.csv"
    roster_rows = list(csv.reader(io.StringIO(roster.read_text())))
    assert {r[0] for r in roster_rows[2:]} == {"'-ana", "'@bob", "'+cy", "'=dee"}
    lines = roster.read_text().splitlines()
    fixed = [lines[0]] + [line.replace(",,,,", f",{100 + i},,,", 1) for i, line in enumerate(lines[1:])]
    fixed[1] = lines[1]
    roster.write_text("\n".join(fixed) + "\n")
    assert main(["export", str(out), "--to", "canvas", "--roster", str(roster), "--dest", str(tmp_path / "again.csv")]) == 0
    again = {r[0]: r[-1] for r in csv.reader(io.StringIO((tmp_path / "again.csv").read_text()))}
    assert {again[k] for k in ("'-ana", "'@bob", "'+cy", "'=dee")} == {"15"}


def test_csv_cells_round_trip_and_numbers_stay_numbers():
    for text in ["-ana", "@bob", "=1+1", "+x", "\tx", "\rx", "'", "''=x", "'-", "plain", ""]:
        assert uncell(cell(text)) == text
        assert not cell(text).startswith(("=", "+", "-", "@", "\t", "\r"))
    assert cell(-1.5) == "-1.5" and cell(3) == "3" and cell("-2") == "-2" and cell(float("nan")) == ""


# the failure boundary ----------------------------------------------------------------------------

def test_a_failure_while_writing_feedback_is_that_students_stored_error(tmp_path, monkeypatch):
    import grader.reports.feedback_html as fh

    real = fh.render_feedback_html

    def broken(result, *a, **k):
        if result["student"] == "mallory":
            raise RuntimeError("the renderer broke")
        return real(result, *a, **k)

    monkeypatch.setattr(fh, "render_feedback_html", broken)
    subs = answer_class(tmp_path)
    good_answers(subs / "mallory")
    got = check_class(tmp_path, subs, "--no-execute", attacker_status={"error"})
    assert got["attacker"]["reason"] == "grader failed while writing feedback: RuntimeError: the renderer broke"
    stored = json.loads((got["out"] / ".state" / "mallory.json").read_text())["result"]
    assert stored["status"] == "error"


def test_a_stored_result_that_no_longer_validates_is_graded_again(tmp_path):
    subs = answer_class(tmp_path)
    ref = write_artifact(tmp_path / "ref.json")
    out = tmp_path / "out"
    argv = (str(subs), "--out", str(out), "--reference", str(ref), "--no-execute")
    assert grade_json(*argv)[0] == 0
    state = out / ".state" / "ann.json"
    record = json.loads(state.read_text())
    record["result"]["questions"] = 7
    state.write_text(json.dumps(record))
    (out / ".state" / "bob.json").write_text("[" * 100_000)
    code, again = grade_json(*argv)
    assert code == 0 and again["graded_now"] == 2
    assert {s["status"] for s in again["students"]} == {"graded"}


def test_an_unhashable_submission_is_an_error_and_the_batch_goes_on(tmp_path, monkeypatch):
    import grader.grading.store as store

    real = store.content_sha256

    def broken(path):
        if Path(path).name == "mallory":
            raise RecursionError("too deep")
        return real(path)

    monkeypatch.setattr(store, "content_sha256", broken)
    subs = answer_class(tmp_path)
    good_answers(subs / "mallory")
    code, summary = grade_json(str(subs), "--out", str(tmp_path / "out"), "--reference",
                               str(write_artifact(tmp_path / "ref.json")), "--no-execute")
    assert code == 0
    got = {s["student"]: (s["status"], s["reason"]) for s in summary["students"]}
    assert got["mallory"] == ("error", "grader failed while hashing the submission: RecursionError: too deep")
    assert got["ann"][0] == got["bob"][0] == "graded"


def test_file_stems_are_bounded_safe_and_distinct():
    names = ["ada", "Ada", "a" * 300, "a" * 301, "x/y", "..", ".", "a.", "jos\udce9", "jos\udce8", "ann-lee~0", "ann lee",
             "ann-lee", "\n", "", "~"]
    stems = [file_stem(n) for n in names]
    assert len(set(stems)) == len(stems)
    for s in stems:
        assert 0 < len(s.encode()) <= 100 and "/" not in s and not s.startswith(".") and s == display(s)

"""The whole grader on real notebooks in the real sandbox: LMS downloads in, hostile notebooks,
a SIGKILL mid-batch, overrides, and exports back out. Uses the bundled demo reference and the
example submissions, so it checks that they grade as they were built to."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from grader.cli import main
from grader_fixtures import grade_json as grade

pytestmark = pytest.mark.sandbox

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "submissions"
EXPECTED = {"ada_right": ("graded", 16.0), "ben_wrong": ("invalid-answers", 0.0),
            "cho_crash": ("error", 8.0), "dev_silent": ("no-answers", 0.0)}
CANVAS_IDS = {"ada_right": "101", "ben_wrong": "102", "cho_crash": "103", "dev_silent": "104"}
FAST = ["--cell-timeout", "60", "--timeout", "120"]
# the examples train 10 epochs per run in the training service: the grader's default limits, not FAST's
EXAMPLE_LIMITS = ["--cell-timeout", "600", "--timeout", "900"]


def rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def canvas_zip(tmp_path_factory) -> Path:
    """The example submissions as a Canvas bulk download, plus two entries that try to escape."""
    path = tmp_path_factory.mktemp("lms") / "submissions.zip"
    with zipfile.ZipFile(path, "w") as z:
        for student, uid in CANVAS_IDS.items():
            late = "_LATE" if student == "ben_wrong" else ""
            name = student.replace("_", "")
            z.write(EXAMPLES / student / "lab7b.ipynb", f"{name}{late}_{uid}_{5000 + int(uid)}_lab7b.ipynb")
        z.writestr("../evil.ipynb", "{}")
        z.writestr("/tmp/evil_abs.ipynb", "{}")
    return path


@pytest.fixture(scope="module")
def canvas_out(canvas_zip, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "canvas"
    code, summary = grade(str(canvas_zip), "--out", str(out), "-j", "2", *EXAMPLE_LIMITS)
    assert code == 0
    return out, summary


def by_student(summary: dict) -> dict:
    return {s["student"].split("_")[0]: s for s in summary["students"]}


def test_a_canvas_zip_of_the_examples_grades_as_they_were_built(canvas_out):
    out, summary = canvas_out
    got = by_student(summary)
    for student, (status, total) in EXPECTED.items():
        s = got[student.replace("_", "")]
        assert (s["status"], s["total"]) == (status, total), s
    assert "cell" in got["chocrash"]["reason"] and "KeyError" in got["chocrash"]["reason"]
    assert not (out.parent / "evil.ipynb").exists() and not Path("/tmp/evil_abs.ipynb").exists()
    refused = json.loads((out / "lms" / "lms.json").read_text())["refused"]
    assert len(refused) == 2 and all(r["reason"] for r in refused)


def results_by_student(out: Path) -> dict:
    return {s["student"].split("_")[0]: s for s in json.loads((out / "results.json").read_text())["students"]}


NUMERIC = ("ex1.a", "ex1.c", "ex2.a", "ex2.b")


def test_the_examples_show_each_evidence_case(canvas_out):
    """ada's answers are backed by its own 10-epoch service runs, ben answers values it never trained,
    cho's Adam runs are notebook-reported (shown, not evidence), dev's 1-epoch runs count for nothing."""
    out, _ = canvas_out
    got = results_by_student(out)

    ada = got["adaright"]
    assert ada["runs_summary"]["evidence"] == "service" and ada["runs_summary"]["calls"] == 3
    assert {(r["config"]["lr"], r["config"]["batch_size"], r["epochs"], r["source"]) for r in ada["runs"]} == {
        (0.03, 128, 10, "service"), (0.1, 128, 10, "service"), (0.1, 256, 10, "service")}
    for qid in NUMERIC:
        ev = ada["questions"][qid]["evidence"]
        assert ev["answer_tried"] is True and ev["agrees"] is True and not ev["complete"], (qid, ev)
    assert ada["questions"]["ex1.a"]["evidence"]["tried"] == [0.03, 0.1]
    assert ada["questions"]["ex1.c"]["evidence"]["tried"] == [128, 256]
    assert all(q.get("evidence_rule") is None for q in ada["questions"].values())

    ben = got["benwrong"]
    assert ben["status"] == "invalid-answers" and ben["runs_summary"]["service"] == 3
    assert {r["served"] for r in ben["runs"]} <= {"memo", "joined", "trained"}
    untried = {qid for qid, q in ben["questions"].items() if q.get("evidence_rule") == "untried"}
    assert untried == {"ex1.a", "ex2.a", "ex2.b"}
    assert all(ben["questions"][qid]["review"] for qid in untried)
    feedback = markdown_text("Your notebook never trained learning rate 1 with the sweep's fixed values")
    assert feedback in (out / "feedback" / f"{ben['student']}.md").read_text()

    cho = got["chocrash"]
    assert [(r["source"], r["config"]["optimizer"], r["served"]) for r in cho["runs"]] == [
        ("notebook-reported", "Adam", "notebook")] * 2
    assert cho["runs_summary"]["evidence"] == "service" and "not evidence" in cho["runs_summary"]["note"]
    assert {qid for qid, q in cho["questions"].items() if q.get("evidence_rule") == "untried"} == {"ex1.a", "ex1.c"}
    assert cho["questions"]["ex1.a"]["evidence"]["tried"] == []

    dev = got["devsilent"]
    assert [(r["epochs"], r["source"]) for r in dev["runs"]] == [(1, "service")] * 2
    assert all(q["evidence"] is None or q["evidence"]["tried"] == [] for q in dev["questions"].values())


def code_cell_position(notebook: Path, needle: str) -> tuple[int, str]:
    """(1-based position among the notebook's code cells, first line) of the code cell holding `needle`."""
    code = [c.source for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code"]
    (position,) = [i for i, src in enumerate(code, start=1) if needle in src]
    return position, next(ln for ln in code[position - 1].splitlines() if ln.strip())


def html_text(path: Path) -> str:
    """The page's text as a reader sees it: tags dropped, entities decoded."""
    import html
    import re

    return html.unescape(re.sub(r"<[^>]*>", "", path.read_text(encoding="utf-8")))


def markdown_text(text: str) -> str:
    """How the Markdown feedback shows student-derived text (escaped: a cell's first line is the student's)."""
    from grader.reports.report import _md

    return _md(text)


def test_the_demo_crash_names_one_cell_number_in_reason_feedback_and_traceback(canvas_out):
    """cho_crash fails in its 4th code cell: the reason, results.json, both feedbacks and the trimmed
    traceback say cell 4 (not the executed notebook's index 9 nor IPython's execution count In[5])."""
    out, summary = canvas_out
    position, first = code_cell_position(EXAMPLES / "cho_crash" / "lab7b.ipynb", "test_acc_max")
    assert position == 4
    label = f"cell {position} «{first[:39]}…»"
    student = by_student(summary)["chocrash"]["student"]
    results = {s["student"]: s for s in json.loads((out / "results.json").read_text())["students"]}
    assert results[student]["reason"] == f"{label}: KeyError: 'test_acc_max'"
    shown_md = markdown_text(f"{label}: KeyError: 'test_acc_max'")
    assert f"- Status: **error**: {shown_md}" in (out / "feedback" / f"{student}.md").read_text()
    page = html_text(out / "feedback" / f"{student}.html")
    assert f"It stopped in {label} with KeyError." in page
    assert f"Cell In[{position}], line 2" in page and "Cell In[5]" not in page and "cell 9" not in page


FUNCTION_CRASH = ["x = 1", "", "  ", "def pick(d):\n    return d['missing']", "# the call\npick({'a': '<b>'})"]


def test_a_crash_after_empty_cells_and_inside_a_function_is_named_as_the_student_counts(tmp_path, capsys):
    """Empty cells are not executed (IPython's count skips them) and the error is raised in an earlier
    cell's function: every message still counts code cells, the setup cell not counted."""
    nb = new_notebook(cells=[nbformat.v4.new_markdown_cell("# Lab")] + [new_code_cell(s) for s in FUNCTION_CRASH])
    (tmp_path / "class" / "eve").mkdir(parents=True)
    nbformat.write(nb, tmp_path / "class" / "eve" / "lab7b.ipynb")
    code, summary = grade(str(tmp_path / "class"), "--out", str(tmp_path / "out"), "--no-train-service", *FAST)
    assert code == 0
    label = "cell 5 «# the call»"
    assert summary["students"][0]["reason"] == f"{label}: KeyError: 'missing'"
    assert f"**error**: {markdown_text(label)}: KeyError" in (tmp_path / "out" / "feedback" / "eve.md").read_text()
    page = html_text(tmp_path / "out" / "feedback" / "eve.html")
    assert f"It stopped in {label} with KeyError." in page
    assert "Cell In[5], line 2" in page and "Cell In[4], line 2, in pick(d)" in page
    capsys.readouterr()
    assert main(["check", str(tmp_path / "class" / "eve" / "lab7b.ipynb"), *FAST]) == 1
    assert f"notebook: error: {label}: KeyError: 'missing'" in capsys.readouterr().out.splitlines()


def test_every_html_feedback_has_every_question_and_a_png_per_numeric_one(canvas_out):
    from html.parser import HTMLParser

    from reference.spec import load_spec

    spec = load_spec()

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.text, self.pngs = [], 0

        def handle_starttag(self, tag, attrs):
            src = dict(attrs).get("src") or ""
            self.pngs += tag == "img" and src.startswith("data:image/png;base64,iVBOR")

        def handle_data(self, data):
            self.text.append(data)

    out, _ = canvas_out
    pages = sorted((out / "feedback").glob("*.html"))
    assert len(pages) == 4
    for page in pages:
        p = Page()
        p.feed(page.read_text())
        text = " ".join(p.text)
        assert all(q.id in text for q in spec.questions), page.name
        if "adaright" in page.name:
            assert p.pngs >= sum(q.kind == "optimum" for q in spec.questions)


def test_canvas_export_with_a_roster_then_overrides_change_everything_consistently(canvas_out, tmp_path):
    out, _ = canvas_out
    roster = tmp_path / "roster.csv"
    lines = ["Student,ID,SIS User ID,SIS Login ID,Section,Lab 7b (77)", "    Points Possible,,,,,16"]
    lines += [f"{s},{uid},S{uid},{s},A," for s, uid in CANVAS_IDS.items()] + ["Absent Student,105,S105,absent,A,"]
    roster.write_text("\n".join(lines) + "\n")

    def export() -> dict:
        assert main(["export", str(out), "--to", "canvas", "--roster", str(roster), "--dest", str(tmp_path / "c.csv")]) == 0
        table = rows(tmp_path / "c.csv")
        return {r["ID"]: r["Lab 7b (77)"] for r in table if r["ID"]}

    grades = export()
    assert len(grades) == 5
    assert {grades[uid] for s, uid in CANVAS_IDS.items() if s == "ada_right"} == {"16"}
    assert grades["103"] == "8" and grades["105"] == "0"

    ada = next(s for s in os.listdir(out / "feedback") if s.startswith("adaright")).rsplit(".", 1)[0]
    overrides = tmp_path / "overrides.csv"
    overrides.write_text(f"student,question,points,comment\n{ada},ex1.d,1,Explain why more updates help.\n")
    code, summary = grade(str(out / "lms" / "submissions"), "--out", str(out), "--overrides", str(overrides), *EXAMPLE_LIMITS)
    assert code == 0 and summary["graded_now"] == 0
    assert next(r for r in rows(out / "grades.csv") if r["student"] == ada)["total"] in ("15", "15.0")
    assert "Explain why more updates help." in (out / "feedback" / f"{ada}.md").read_text()
    assert "Explain why more updates help." in (out / "feedback" / f"{ada}.html").read_text()
    assert export()["101"] == "15"


def test_a_moodle_download_grades_and_exports_to_the_worksheet(tmp_path):
    root = tmp_path / "moodle"
    for i, student in enumerate(["ada_right", "dev_silent"], start=1):
        folder = root / f"{student.replace('_', ' ').title()}_{900 + i}_assignsubmission_file_"
        folder.mkdir(parents=True)
        shutil.copy(EXAMPLES / student / "lab7b.ipynb", folder / "lab7b.ipynb")
    out = tmp_path / "out"
    code, summary = grade(str(root), "--out", str(out), "-j", "2", *EXAMPLE_LIMITS)
    assert code == 0
    assert sorted((s["status"], s["total"]) for s in summary["students"]) == [("graded", 16.0), ("no-answers", 0.0)]
    worksheet = tmp_path / "worksheet.csv"
    worksheet.write_text("Identifier,Full name,Email address,Status,Grade,Maximum Grade,Grade can be changed,"
                         "Last modified (submission),Last modified (grade),Feedback comments\n"
                         "Participant 901,Ada Right,ada@example.org,Submitted,,16,Yes,,,\n"
                         "Participant 902,Dev Silent,dev@example.org,Submitted,,16,Yes,,,\n"
                         "Participant 903,Eve Absent,eve@example.org,No submission,,16,Yes,,,\n")
    assert main(["export", str(out), "--to", "moodle", "--roster", str(worksheet), "--dest", str(tmp_path / "m.csv")]) == 0
    grades = {r["Identifier"]: r["Grade"] for r in rows(tmp_path / "m.csv")}
    assert grades == {"Participant 901": "16", "Participant 902": "0", "Participant 903": "0"}


def _notebook(folder: Path, *sources: str) -> None:
    folder.mkdir(parents=True)
    nbformat.write(new_notebook(cells=[new_code_cell(s) for s in sources]), folder / "lab7b.ipynb")


GOOD = 'import json\njson.dump({"a": "0.03", "b": "yes, it underfits", "c": 256, "d": ""}, open("7b_ex1.json", "w"))'


def test_hostile_notebooks_get_their_status_and_the_rest_of_the_batch_is_graded(tmp_path):
    subs = tmp_path / "class"
    _notebook(subs / "good", GOOD)
    _notebook(subs / "loop", "x = 1", "while True:\n    pass")
    _notebook(subs / "link", "import os\nos.symlink('/etc/passwd', '7b_ex1.json')")
    (subs / "notjson").mkdir()
    (subs / "notjson" / "lab7b.ipynb").write_text("this is not a notebook")
    (subs / "empty").mkdir()
    (subs / "empty" / "lab7b.ipynb").write_text("")
    code, summary = grade(str(subs), "--out", str(tmp_path / "out"), "-j", "2",
                          "--cell-timeout", "4", "--timeout", "60", "--memory", "4096")
    assert code == 0
    got = {s["student"]: s for s in summary["students"]}
    assert got["good"]["status"] == "graded" and got["good"]["total"] > 0
    assert got["loop"]["status"] == "timeout" and "cell 2" in got["loop"]["reason"]
    assert got["link"]["status"] in ("invalid-answers", "no-answers") and "link" in got["link"]["reason"].lower()
    for name in ("notjson", "empty"):
        assert got[name]["status"] == "error" and "\n" not in got[name]["reason"]


def test_grade_killed_mid_batch_resumes_with_only_the_unfinished(tmp_path):
    subs = tmp_path / "class"
    for i in range(5):
        _notebook(subs / f"s{i}", GOOD)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "grader", "grade", str(subs), "--out", str(out), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / ".state").glob("*.json")) if (out / ".state").is_dir() else []) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(list((out / ".state").glob("*.json")))
    assert 2 <= finished < 5
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["graded_now"] == 5 - finished and summary["reused"] == finished
    students = [r["student"] for r in rows(out / "grades.csv")]
    assert sorted(students) == [f"s{i}" for i in range(5)]

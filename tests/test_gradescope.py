"""`labgrader gradescope`: results.json is always there and valid; the bundle installs and runs."""

import json
import stat
import zipfile
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from grader.lms import gradescope
from grader.cli import main
from grader.lms.lms_in import safe_extract

ROOT = Path(__file__).resolve().parents[1]
VALIDATOR = Draft202012Validator(json.loads((ROOT / "schemas" / "gradescope-results.schema.json").read_text()))


def layout(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "autograder"
    for name, text in files.items():
        path = root / "submission" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / "submission").mkdir(parents=True, exist_ok=True)
    return root


def results_of(root: Path) -> dict:
    doc = json.loads((root / "results" / "results.json").read_text())
    assert list(VALIDATOR.iter_errors(doc)) == []
    return doc


def canned(total=12.0) -> tuple[dict, dict, str]:
    questions = {f"ex{i}.{k}": {"points": 2.0 if k != "d" else 1.0, "max": 2, "verdict": "right" if k != "d" else "review",
                                "answer": "x", "expected": None, "feedback": "fine", "review": k == "d"}
                 for i in (1, 2) for k in "abcd"}
    result = {"student": "student", "status": "graded", "reason": "all answer files valid", "total": total, "max": 16,
              "questions": questions, "review": True, "content_sha256": "0" * 64, "executed": None, "duration_s": 3.0}
    return {"assignment": "7b", "options": {"no_execute": False}}, result, "graded 1\n"


def test_run_writes_the_students_result(tmp_path, monkeypatch, capsys):
    root = layout(tmp_path, {"lab7b.ipynb": "{}"})
    seen = {}

    def fake(submission, args):
        seen["submission"] = submission
        return canned(14.0)

    monkeypatch.setattr(gradescope, "grade_submission", fake)
    assert main(["gradescope", "run", "--root", str(root)]) == 0
    doc = results_of(root)
    assert seen["submission"] == root / "submission"
    assert doc["score"] == 14.0 and len(doc["tests"]) == 8
    assert doc["output"].startswith("Lab 7b: 14 of 16 points.") and "ex1.d, ex2.d await" in doc["output"]
    assert "score 14" in capsys.readouterr().out


def test_a_crash_in_grading_still_leaves_valid_results_with_score_0(tmp_path, monkeypatch):
    root = layout(tmp_path, {"lab7b.ipynb": "{}"})

    def crash(submission, args):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(gradescope, "grade_submission", crash)
    assert main(["gradescope", "run", "--root", str(root)]) == 0
    doc = results_of(root)
    assert doc["score"] == 0 and "RuntimeError: kernel exploded" in doc["output"]


def test_a_failing_grade_command_is_reported_by_its_last_line(tmp_path, monkeypatch):
    root = layout(tmp_path, {"lab7b.ipynb": "{}"})

    def failing_grade(grade_args):
        assert grade_args.hide_answers and not grade_args.no_execute
        return 2, "labgrader: the reference artifact is broken\n"

    monkeypatch.setattr(gradescope, "run_grade", failing_grade)
    assert gradescope.run_command(gradescope_args(root)) == 0
    doc = results_of(root)
    assert doc["score"] == 0 and "grading failed: the reference artifact is broken" in doc["output"]


def test_no_submission_folder_is_a_zero_that_says_so(tmp_path):
    root = tmp_path / "autograder"
    assert main(["gradescope", "run", "--root", str(root)]) == 0
    doc = results_of(root)
    assert doc["score"] == 0 and "no submission folder" in doc["output"]


def gradescope_args(root: Path, *extra: str):
    from grader.cli import build_parser

    return build_parser().parse_args(["gradescope", "run", "--root", str(root), *extra])


@pytest.fixture
def graded_env(tmp_path, monkeypatch):
    from grader_fixtures import install_fake_executor, write_artifact

    calls = install_fake_executor(monkeypatch)
    return calls, write_artifact(tmp_path / "ref.json")


def test_answer_files_alone_are_scored_through_the_real_pipeline(tmp_path, graded_env):
    from grader_fixtures import RIGHT

    calls, ref = graded_env
    answers = {name: dict(data) for name, data in RIGHT.items()}
    answers["7b_ex1.json"]["a"] = "0.001"
    root = layout(tmp_path, {name: json.dumps(data) for name, data in answers.items()})
    assert main(["gradescope", "run", "--root", str(root), "--reference", str(ref)]) == 0
    doc = results_of(root)
    assert calls == []
    assert doc["score"] == 14 and doc["extra_data"]["status"] == "graded"
    assert "No notebook was submitted" in doc["output"]
    first = doc["tests"][0]
    assert (first["number"], first["score"], first["status"]) == ("ex1.a", 0, "failed")
    assert "0.1" not in first["output"] and "0.2" not in first["output"], "the tie set must stay hidden"


def test_a_crashing_notebook_is_scored_with_its_reason(tmp_path, graded_env):
    from grader_fixtures import data_folder, notebook

    calls, ref = graded_env
    root = layout(tmp_path, {})
    notebook(root / "submission" / "lab7b.ipynb", {"status": "error", "cell": 3, "reason": "NameError: name 'x' is not defined"})
    data = data_folder(tmp_path / "data")
    assert main(["gradescope", "run", "--root", str(root), "--reference", str(ref), "--data-dir", str(data)]) == 0
    doc = results_of(root)
    assert len(calls) == 1
    assert doc["score"] == 0 and "Status: error: cell 3: NameError" in doc["output"]


def test_build_writes_a_zip_with_executable_scripts_and_the_source(tmp_path):
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"provenance": {"data": {"kind": "real"}}}))
    dest = tmp_path / "bundle" / "autograder.zip"
    assert main(["gradescope", "build", "--dest", str(dest), "--reference", str(ref), "--timeout", "1200"]) == 0
    with zipfile.ZipFile(dest) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        setup = zf.read("setup.sh").decode()
        run = zf.read("run_autograder").decode()
        assert zf.read("reference.json") == ref.read_bytes()
        schema = zf.read("labgrader/grader/schemas/gradescope-results.schema.json")
    for script in ("setup.sh", "run_autograder"):
        mode = infos[script].external_attr >> 16
        assert stat.S_ISREG(mode) and mode & 0o111 == 0o111
    assert {"labgrader/pyproject.toml", "labgrader/README.md", "labgrader/grader/cli.py",
            "labgrader/reference/spec.py", "labgrader/schemas/results.schema.json"} <= set(infos)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in infos)
    assert json.loads(schema)["title"].startswith("Gradescope")
    assert "apt-get install -y python3 python3-pip python3-venv bubblewrap" in setup
    assert '"torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu' in setup
    assert "pip install /autograder/source/labgrader" in setup
    assert "data fetch --data-dir /opt/labgrader-data" in setup
    assert "labgrader gradescope run --root /autograder" in run
    assert "--timeout 1200" in run and "--reference /autograder/source/reference.json" in run
    assert "--data-dir /opt/labgrader-data" in run
    assert setup.startswith("#!/usr/bin/env bash") and run.startswith("#!/usr/bin/env bash")
    assert safe_extract(dest, tmp_path / "unpacked") == []
    assert (tmp_path / "unpacked" / "labgrader" / "grader" / "schemas").is_dir()


def test_run_with_a_read_only_results_folder_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    """Gradescope's results folder unwritable: a clean reason naming the file, not the CLI's internal error."""
    import errno
    import os

    from grader.common import atomic

    root = layout(tmp_path, {"lab7b.ipynb": "{}"})
    monkeypatch.setattr(gradescope, "grade_submission", lambda submission, args: canned())

    def read_only(path, data):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(atomic, "write_bytes_atomic", read_only)
    assert main(["gradescope", "run", "--root", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error" not in err[0]
    assert str(root / "results" / "results.json") in err[0] and "cannot write: Read-only file system" in err[0]

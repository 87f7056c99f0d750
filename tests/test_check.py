"""`labgrader check`: exit codes, one-line messages, JSON output, no expected values, no torch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grader.cli import main
from grader_fixtures import RIGHT, write_artifact

ROOT = Path(__file__).resolve().parents[1]


def labgrader(*argv, cwd=ROOT):
    env = {k: v for k, v in os.environ.items() if k != "LABGRADER_DEBUG"}
    return subprocess.run([sys.executable, "-m", "grader", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def ref(tmp_path):
    return write_artifact(tmp_path / "reference.json")


def answers(folder: Path, name: str, data) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_a_valid_file_exits_0_and_judges_each_question(tmp_path, ref):
    path = answers(tmp_path, "7b_ex1.json", {"a": "0.3", "b": RIGHT["7b_ex1.json"]["b"], "c": "32", "d": ""})
    run = labgrader("check", path, "--reference", ref)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "7b_ex1.json: valid"
    assert "  a  partly right" in run.stdout
    assert "  b  right, reason needs review" in run.stdout
    assert "  c  right" in run.stdout
    assert "  d  not answered" in run.stdout
    assert lines[-1].startswith("score: 5 of 8 points")
    assert "{0.1, 0.2}" not in run.stdout and "0.934" not in run.stdout and "Expected" not in run.stdout
    assert "Traceback" not in run.stderr


def test_reveal_shows_the_expected_values(tmp_path, ref):
    path = answers(tmp_path, "7b_ex1.json", {"a": "0.3"})
    run = labgrader("check", path, "--reference", ref, "--reveal")
    assert run.returncode == 0
    assert "Expected a learning rate in the tie set {0.1, 0.2}" in run.stdout


def test_an_invalid_file_exits_1_with_one_line_per_problem(tmp_path, ref):
    path = answers(tmp_path, "7b_ex1.json", {"a": "0.1x", "c": "lots", "e": 1})
    run = labgrader("check", path, "--reference", ref)
    assert run.returncode == 1
    assert "7b_ex1.json: invalid (3 problems)" in run.stdout
    assert '  7b_ex1.json: a: "0.1x" is not a number' in run.stdout
    assert '  7b_ex1.json: c: "lots" is not a whole number' in run.stdout
    assert "  7b_ex1.json: e: unexpected key (allowed: a, b, c, d)" in run.stdout
    assert "  a  invalid" in run.stdout
    assert run.stderr.count("Traceback") == 0


def test_malformed_json_exits_1(tmp_path, ref):
    path = answers(tmp_path, "7b_ex2.json", '{"a": "0.03",')
    run = labgrader("check", path, "--reference", ref)
    assert run.returncode == 1
    assert "7b_ex2.json: is not valid JSON: Expecting property name enclosed in double quotes (line 1, column 14)" in run.stdout


def test_a_missing_path_exits_2_with_one_line(tmp_path, ref):
    run = labgrader("check", tmp_path / "nope.json", "--reference", ref)
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr == f"labgrader: {tmp_path / 'nope.json'}: no such file or folder\n"


def test_a_json_file_that_is_not_an_answer_file_exits_2(tmp_path, ref):
    path = answers(tmp_path, "answers.json", {"a": "0.1"})
    run = labgrader("check", path, "--reference", ref)
    assert run.returncode == 2
    assert run.stderr.strip() == f"labgrader: {path}: not an answer file of lab 7b (expected 7b_ex1.json or 7b_ex2.json)"


def test_a_browser_renamed_download_still_counts(tmp_path, ref):
    path = answers(tmp_path, "7b_ex2 (1).json", {"a": "0.03"})
    run = labgrader("check", path, "--reference", ref)
    assert run.returncode == 0 and run.stdout.startswith("7b_ex2.json: valid")


def test_json_output_parses(tmp_path, ref):
    path = answers(tmp_path, "7b_ex1.json", {"a": "0.1", "b": "maybe"})
    run = labgrader("check", path, "--reference", ref, "--json")
    assert run.returncode == 1
    doc = json.loads(run.stdout)
    assert doc["valid"] is False
    [f] = doc["files"]
    assert (f["file"], f["valid"], f["errors"]) == ("7b_ex1.json", False, ['7b_ex1.json: b: "maybe" does not start with yes or no'])
    by_key = {q["key"]: q for q in f["questions"]}
    assert by_key["a"]["verdict"] == "right" and by_key["a"]["points"] == 2
    assert by_key["b"]["label"] == "invalid"
    assert all("expected" not in q for q in f["questions"])
    assert doc["reference"]["demo"] is False and doc["total"] == 2 and doc["max"] == 8


def test_a_folder_checks_both_files(tmp_path, ref):
    answers(tmp_path / "work", "7b_ex1.json", RIGHT["7b_ex1.json"])
    answers(tmp_path / "work", "7b_ex2.json", RIGHT["7b_ex2.json"])
    run = labgrader("check", tmp_path / "work", "--reference", ref, "--json")
    assert run.returncode == 0
    doc = json.loads(run.stdout)
    assert [f["file"] for f in doc["files"]] == ["7b_ex1.json", "7b_ex2.json"]
    assert doc["total"] == 16 and doc["provisional"] is True


def test_an_empty_folder_is_a_usage_error(tmp_path, ref):
    (tmp_path / "empty").mkdir()
    run = labgrader("check", tmp_path / "empty", "--reference", ref)
    assert run.returncode == 2 and run.stderr.startswith(f"labgrader: {tmp_path / 'empty'}: holds no answer files")


def test_a_notebook_with_no_execute_reads_the_files_beside_it(tmp_path, ref):
    (tmp_path / "lab.ipynb").write_text("{}")
    answers(tmp_path, "7b_ex2.json", {"a": "0.03", "b": "64"})
    run = labgrader("check", tmp_path / "lab.ipynb", "--no-execute", "--reference", ref)
    assert run.returncode == 0
    assert "7b_ex1.json: not written" in run.stdout and "7b_ex2.json: valid" in run.stdout


def test_without_reference_the_demo_is_used_and_said(tmp_path, ref, monkeypatch, capsys):
    import grader.assessment.reference_io as reference_io

    monkeypatch.setattr(reference_io, "DEMO_REFERENCE", ref)
    path = answers(tmp_path, "7b_ex1.json", {"a": "0.1"})
    assert main(["check", str(path)]) == 0
    err = capsys.readouterr().err
    assert "using the bundled demo reference" in err and "synthetic data" in err


def test_checking_json_never_imports_torch_nbclient_or_pandas(tmp_path, ref):
    path = answers(tmp_path, "7b_ex1.json", {"a": "0.1"})
    code = (
        "import sys, json\n"
        "from grader.cli import main\n"
        f"rc = main(['check', {str(path)!r}, '--reference', {str(ref)!r}, '--json'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'nbclient', 'pandas', 'numpy', 'tqdm'))\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy}), file=sys.stderr)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    report = json.loads(run.stderr.strip().splitlines()[-1])
    assert report == {"rc": 0, "heavy": []}


def _fake_notebook_check(tmp_path, monkeypatch, fake, *extra):
    from grader_fixtures import install_fake_executor, notebook

    calls = install_fake_executor(monkeypatch)
    nb = notebook(tmp_path / "student" / "lab7b.ipynb", fake)
    ref = write_artifact(tmp_path / "ref.json")
    code = main(["check", str(nb), "--reference", str(ref), "--data-dir", str(tmp_path), *extra])
    return code, calls


def test_a_notebook_is_executed_and_its_answer_files_checked(tmp_path, monkeypatch, capsys):
    code, calls = _fake_notebook_check(tmp_path, monkeypatch, {"write": RIGHT})
    assert code == 0 and len(calls) == 1 and calls[0]["sandbox"] is True
    out = capsys.readouterr().out
    assert out.startswith("notebook: ok\n7b_ex1.json: valid\n") and "7b_ex2.json: valid" in out
    assert "score: 16 of 16 points" in out


def test_a_failing_notebook_exits_1_and_says_where(tmp_path, monkeypatch, capsys):
    fake = {"status": "error", "reason": "cell 3: NameError: name 'x' is not defined", "cell": 3,
            "write": {"7b_ex1.json": RIGHT["7b_ex1.json"]}}
    code, _ = _fake_notebook_check(tmp_path, monkeypatch, fake, "--json")
    assert code == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["execution"]["status"] == "error" and doc["execution"]["reason"] == "cell 3: NameError: name 'x' is not defined"
    assert [f["found"] for f in doc["files"]] == [True, False] and doc["valid"] is False


def test_a_notebook_that_writes_nothing_exits_1(tmp_path, monkeypatch, capsys):
    code, calls = _fake_notebook_check(tmp_path, monkeypatch, {}, "--no-sandbox")
    assert code == 1 and calls[0]["sandbox"] is False
    out = capsys.readouterr().out
    assert "notebook: wrote no answer files" in out

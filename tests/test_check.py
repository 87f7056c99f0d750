"""`labgrader check`: exit codes, one-line messages, JSON output, no expected values, no torch."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from grader.cli import main
from grader.execution.sandbox import NO_BWRAP
from grader_fixtures import RIGHT, data_folder, write_artifact

ROOT = Path(__file__).resolve().parents[1]


def labgrader(*argv, cwd=ROOT, timeout=60):
    env = {k: v for k, v in os.environ.items() if k != "LABGRADER_DEBUG"}
    return subprocess.run([sys.executable, "-m", "grader", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


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


def test_no_execute_beside_a_notebook_with_no_answer_files_is_nothing_to_check(tmp_path, ref):
    (tmp_path / "lab.ipynb").write_text("{}")
    run = labgrader("check", tmp_path / "lab.ipynb", "--no-execute")
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr == (f"labgrader: {tmp_path / 'lab.ipynb'}: no answer files beside it (7b_ex1.json, 7b_ex2.json); "
                          "run the notebook first, or check it without --no-execute\n")


@pytest.mark.parametrize("flag, value", [("--timeout", "nan"), ("--timeout", "-1"), ("--cell-timeout", "inf"),
                                         ("--memory", "0"), ("--processes", "1.5"), ("--train-time", "nan")])
def test_a_limit_that_is_not_a_positive_number_is_a_usage_error(tmp_path, flag, value):
    (tmp_path / "lab.ipynb").write_text("{}")
    run = labgrader("check", tmp_path / "lab.ipynb", flag, value)
    assert run.returncode == 2 and run.stdout == "" and "Traceback" not in run.stderr
    assert run.stderr.splitlines()[-1].startswith(f"labgrader check: error: argument {flag}: '{value}'")


@pytest.mark.parametrize("argv", [["check", ""], ["grade", "", "--no-execute"], ["grade", ".", "--out", ""],
                                  ["export", " ", "--to", "canvas"]])
def test_an_empty_path_is_a_usage_error_not_this_folder(tmp_path, argv):
    run = labgrader(*argv, cwd=tmp_path)
    assert run.returncode == 2 and "an empty path" in run.stderr.splitlines()[-1]
    assert list(tmp_path.iterdir()) == [], "nothing written into the current folder"


def test_control_characters_in_a_path_never_reach_the_terminal(tmp_path):
    run = labgrader("check", tmp_path / "\x1b]0;owned\x07\x1b[2Jx.json")
    assert run.returncode == 2 and "\x1b" not in run.stderr and "\x07" not in run.stderr
    assert run.stderr.count("\n") == 1 and "\\x1b]0;owned\\x07\\x1b[2Jx.json: no such file or folder" in run.stderr


def test_a_data_dir_that_is_missing_or_lacks_the_files_stops_before_the_notebook_runs(tmp_path, monkeypatch, capsys):
    from grader_fixtures import install_fake_executor, notebook

    calls = install_fake_executor(monkeypatch)
    nb = notebook(tmp_path / "student" / "lab7b.ipynb", {"write": RIGHT})
    assert main(["check", str(nb), "--data-dir", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == (f"labgrader: data dir {tmp_path / 'nope'} (--data-dir) is not a folder; "
                                       f"`labgrader data fetch --data-dir {tmp_path / 'nope'}` downloads Fashion-MNIST into it\n")
    (tmp_path / "empty").mkdir()
    assert main(["check", str(nb), "--data-dir", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.startswith(f"labgrader: train-images-idx3-ubyte.gz is missing from {tmp_path / 'empty'};")
    assert calls == []


def test_a_notebook_with_no_execute_reads_the_files_beside_it(tmp_path, ref):
    (tmp_path / "lab.ipynb").write_text("{}")
    answers(tmp_path, "7b_ex2.json", {"a": "0.03", "b": "64"})
    run = labgrader("check", tmp_path / "lab.ipynb", "--no-execute", "--reference", ref)
    assert run.returncode == 0
    assert "7b_ex1.json: not written" in run.stdout and "7b_ex2.json: valid" in run.stdout


@pytest.mark.parametrize("with_reference", [True, False])
def test_checking_json_never_imports_torch_nbclient_or_pandas(tmp_path, ref, with_reference):
    path = answers(tmp_path, "7b_ex1.json", {"a": "0.1"})
    argv = [str(path), *(["--reference", str(ref)] if with_reference else []), "--json"]
    code = (
        "import sys, json\n"
        "from grader.cli import main\n"
        f"rc = main(['check', *{argv!r}])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'nbclient', 'pandas', 'numpy', 'tqdm'))\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy}), file=sys.stderr)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    report = json.loads(run.stderr.strip().splitlines()[-1])
    assert report == {"rc": 0, "heavy": []}


def _fake_notebook_check(tmp_path, monkeypatch, fake, *extra, reference=True):
    from grader_fixtures import install_fake_executor, notebook

    calls = install_fake_executor(monkeypatch)
    nb = notebook(tmp_path / "student" / "lab7b.ipynb", fake)
    ref = ["--reference", str(write_artifact(tmp_path / "ref.json"))] if reference else []
    code = main(["check", str(nb), *ref, "--data-dir", str(data_folder(tmp_path / "data")), *extra])
    return code, calls


def test_a_notebook_is_executed_and_its_answer_files_checked(tmp_path, monkeypatch, capsys):
    code, calls = _fake_notebook_check(tmp_path, monkeypatch, {"write": RIGHT})
    assert code == 0 and len(calls) == 1 and calls[0]["sandbox"] is True
    out = capsys.readouterr().out
    assert out.startswith("notebook: ok\nyour notebook reported no runs (the lab kit reports each train() call it runs)\n"
                          "7b_ex1.json: valid\n") and "7b_ex2.json: valid" in out
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
    assert code == 1 and calls[0]["sandbox"] is False and calls[0]["warn_unsandboxed"] is True
    out = capsys.readouterr().out
    assert "notebook: wrote no answer files" in out


# without the course's reference: nothing given away ------------------------------------------------

VERDICT = re.compile(r"\b(right|wrong|partly|close|correct|incorrect|expected)\b", re.IGNORECASE)
WRONG = {"7b_ex1.json": {**RIGHT["7b_ex1.json"], "a": "1.0", "b": "Yes: the test optimum 0.03 is lower; at 0.1 the model starts to overfit",
                         "c": "1024"},
         "7b_ex2.json": {**RIGHT["7b_ex2.json"], "a": "0.001", "b": 1024,
                         "c": "No, more noise regularizes the model and it generalizes better"}}


def test_without_reference_a_right_and_a_wrong_file_read_the_same_and_exit_0(tmp_path):
    outputs = []
    for name, answers_ in (("right", RIGHT), ("wrong", WRONG)):
        for file, data in answers_.items():
            path = answers(tmp_path / name, file, data)
            run = labgrader("check", path)
            assert run.returncode == 0, run.stderr
            assert run.stderr == "" and "demo" not in run.stdout
            outputs.append((file, run.stdout))
    assert outputs[0] == outputs[2] and outputs[1] == outputs[3]
    out = outputs[0][1]
    assert VERDICT.search(out) is None and VERDICT.search(outputs[1][1]) is None
    lines = out.splitlines()
    assert lines[0] == ("no runs: a JSON file checked alone carries none; check the notebook to compare your answers "
                        "with your own runs")
    assert lines[1] == "7b_ex1.json: valid"
    assert out.count("the course's reference decides the points") == 3
    assert "  a  valid\n     the course's reference decides the points\n" in out
    assert "  b  valid\n     reason: meets the rubric, provisional until an instructor reviews it\n" in out
    assert "  d  valid\n     Your answer meets the rubric: 2 of 2 points, provisional until an instructor reviews it.\n" in out
    assert lines[-1] == ("points: the course's reference decides 6 points (ex1.a, ex1.b, ex1.c); "
                         "free text: 2 of 2, provisional until an instructor reviews it")
    assert "score" not in out and "0.934" not in out and "{0.1, 0.2}" not in out


def test_without_reference_invalid_and_missing_answers_say_so(tmp_path):
    path = answers(tmp_path, "7b_ex1.json", {"a": "0.05", "c": "lots"})
    run = labgrader("check", path)
    assert run.returncode == 1
    assert "  a  valid\n     0.05 is not on the grid: it counts as 0.03, the nearest grid value\n" in run.stdout
    assert "  b  not answered\n" in run.stdout
    assert '  c  invalid: "lots" is not a whole number\n' in run.stdout
    assert "  d  not answered\n     Not answered: 0 of 2 points.\n" in run.stdout
    assert VERDICT.search(run.stdout) is None


def test_without_reference_json_carries_no_verdict_or_points_for_reference_decided_questions(tmp_path):
    path = answers(tmp_path, "7b_ex2.json", {**RIGHT["7b_ex2.json"], "b": "lots"})
    run = labgrader("check", path, "--json")
    assert run.returncode == 1
    doc = json.loads(run.stdout)
    assert doc["reference"] is None and "total" not in doc and doc["valid"] is False
    assert doc["runs"] == {"source": None, "note": "no runs: a JSON file checked alone carries none; check the notebook "
                                                   "to compare your answers with your own runs"}
    by_key = {q["key"]: q for q in doc["files"][0]["questions"]}
    for key in "abc":
        q = by_key[key]
        assert q["decided_by"] == "reference" and q["evidence"] is None and q["coverage"] is None
        assert not {"verdict", "points", "expected", "label"} & set(q)
    assert (by_key["a"]["status"], by_key["a"]["valid"]) == ("valid", True)
    assert (by_key["b"]["status"], by_key["b"]["valid"], by_key["b"]["reason"]) == ("invalid", False, '"lots" is not a whole number')
    assert (by_key["d"]["decided_by"], by_key["d"]["points"], by_key["d"]["review"]) == ("rubric", 2, True)
    assert doc["points"]["reference"] == {"questions": ["ex2.a", "ex2.b", "ex2.c"], "max": 6}
    assert VERDICT.search(json.dumps(doc)) is None


def test_a_folder_alone_says_it_carries_no_runs(tmp_path):
    answers(tmp_path / "work", "7b_ex1.json", RIGHT["7b_ex1.json"])
    run = labgrader("check", tmp_path / "work")
    assert run.returncode == 0
    assert run.stdout.splitlines()[0] == ("no runs: answer files checked alone carry none; check the notebook to "
                                          "compare your answers with your own runs")
    assert "7b_ex2.json: not written" in run.stdout


def test_reveal_without_reference_is_a_one_line_usage_error(tmp_path):
    path = answers(tmp_path, "7b_ex1.json", {"a": "0.1"})
    run = labgrader("check", path, "--reveal")
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr == ("labgrader: --reveal: there is nothing to reveal without the course's reference; "
                          "pass --reference REF if your course handed one out\n")


def test_reveal_without_reference_runs_no_notebook(tmp_path, monkeypatch):
    code, calls = _fake_notebook_check(tmp_path, monkeypatch, {"write": RIGHT}, "--reveal", reference=False)
    assert code == 2 and calls == []


def test_hostile_answer_text_stays_one_escaped_line(tmp_path):
    path = answers(tmp_path, "7b_ex1.json", '{"a": "0.1\\u202e\\u001b[2J", "c": 32, "x\\u202e\\u001b[31m\\nfake": 1}')
    run = labgrader("check", path)
    assert run.returncode == 1
    assert "\x1b" not in run.stdout and "\u202e" not in run.stdout
    assert "  7b_ex1.json: \"x\\u202e\\u001b[31m\\nfake\": unexpected key (allowed: a, b, c, d)\n" in run.stdout
    assert '  a  invalid: "0.1\\u202e\\u001b[2J" is not a number\n' in run.stdout
    assert not any(line.startswith("fake") for line in run.stdout.splitlines())


# the notebook's own runs as evidence ---------------------------------------------------------------

def kit_line(lr, final_train, best_test, *, batch_size=128, momentum=0.9, epochs=10, optimizer="SGD", note=None) -> str:
    """One line of the kit's runs file (reference/kit_report.py)."""
    acc = [round(final_train * (e + 1) / epochs, 6) for e in range(epochs)]
    test = [round(best_test * min(1.0, (e + 1) / max(1, epochs - 2)), 6) for e in range(epochs)]
    return json.dumps({"config": {"lr": lr, "batch_size": batch_size, "momentum": momentum, "hidden": 512,
                                  "optimizer": optimizer},
                       "epochs": epochs, "history": {"acc": acc, "test_acc": test, "loss": [1.0] * epochs,
                                                     "test_loss": [1.0] * epochs}, "note": note}) + "\n"


# own runs: lr 0.1 trains best, 0.5 tests best; RIGHT answers ex1.a 0.1 (agrees), ex2.a 0.03 (never ran it)
OWN_RUNS = (kit_line(0.01, 0.80, 0.78) + kit_line(0.1, 0.90, 0.85) + kit_line(0.5, 0.85, 0.88)
            + kit_line(0.5, 0.85, 0.88) + kit_line(0.01, 0.95, 0.95, optimizer="Adam", epochs=2,
                                                 note="x\x1b[2J\u202e\nfake: valid"))


def test_a_notebook_without_reference_compares_each_answer_with_its_own_runs(tmp_path, monkeypatch, capsys):
    code, _ = _fake_notebook_check(tmp_path, monkeypatch, {"write": RIGHT, "reported_runs": OWN_RUNS}, reference=False)
    assert code == 0
    out = capsys.readouterr().out
    assert VERDICT.search(out) is None and "score" not in out
    assert out.startswith("notebook: ok\nyour notebook ran train() 5 times (4 configurations, repeats averaged); 3 count "
                          "as evidence (SGD, 512 hidden units, 10 epochs, a sweep's grid value with its fixed values)\n"
                          "  not counted: lr 0.01, batch size 128, momentum 0.9, Adam, 2 epochs: Adam, not SGD "
                          "(the kit's note: x\\x1b[2J\\u202e fake: valid)\n7b_ex1.json: valid\n")
    assert ("  a  valid\n"
            "     consistent with your own runs: your best learning rate by final training accuracy is 0.1\n"
            "     you ran 3 of 9 learning rates (0.01, 0.1, 0.5)\n"
            "     the course's reference decides the points\n") in out
    assert "  b  valid\n     reason: meets the rubric, provisional until an instructor reviews it\n" \
           "     consistent with your own runs: they say 'no' too\n" in out
    assert ("     not consistent: your own runs point to 128 (the best batch size by final training accuracy)\n"
            "     you ran 1 of 7 batch sizes (128)\n"
            "     you never ran batch size 32 yourself: `grade` flags an answer your notebook never trained for an "
            "instructor's review\n") in out
    ex2 = out.split("7b_ex2.json: valid\n")[1]
    assert ex2.startswith("  a  valid\n     not consistent: your own runs point to 0.5 (the best learning rate by best "
                          "test accuracy)\n     you ran 3 of 9 learning rates (0.01, 0.1, 0.5)\n")
    assert ("  c  valid\n     reason: meets the rubric, provisional until an instructor reviews it\n"
            "     consistent with your own runs: they say 'yes' too\n"
            "     you ran 3 of 9 learning rates (0.01, 0.1, 0.5) and 1 of 7 batch sizes (128)\n") in ex2


def test_a_notebook_without_reference_json_carries_the_evidence(tmp_path, monkeypatch, capsys):
    code, _ = _fake_notebook_check(tmp_path, monkeypatch, {"write": RIGHT, "reported_runs": OWN_RUNS + "{broken\n"},
                                   "--json", reference=False)
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["runs"]["source"], doc["runs"]["calls"], doc["runs"]["counted"], doc["runs"]["unreadable"]) == \
        ("notebook-reported", 5, 3, 1)
    assert doc["runs"]["not_counted"][0]["why"] == "Adam, not SGD"
    q = {q["id"]: q for f in doc["files"] for q in f["questions"]}
    a = q["ex1.a"]
    assert a["consistency"] == "consistent" and not {"verdict", "points"} & set(a)
    assert a["evidence"]["tried"] == [0.01, 0.1, 0.5] and a["evidence"]["own_best"] == 0.1
    assert a["evidence"]["own_metric"]["0.5"] == 0.85 and a["evidence"]["source"] == "notebook-reported"
    assert a["coverage"] == {"lr": {"vary": "lr", "tried": [0.01, 0.1, 0.5], "of": 9}}
    assert (q["ex2.a"]["consistency"], q["ex2.a"]["evidence"]["own_best"], q["ex2.a"]["evidence"]["answer_tried"]) == \
        ("not consistent", 0.5, False)
    assert (q["ex2.c"]["consistency"], q["ex2.c"]["evidence"]["own_truth"]) == ("consistent", True)
    assert "evidence" not in q["ex1.d"] and q["ex1.d"]["decided_by"] == "rubric"


def test_with_reference_a_notebook_scores_as_today_plus_its_own_runs(tmp_path, monkeypatch, capsys):
    code, _ = _fake_notebook_check(tmp_path, monkeypatch, {"write": RIGHT, "reported_runs": OWN_RUNS})
    assert code == 0
    out = capsys.readouterr().out
    assert "score: 16 of 16 points" in out and "the course's reference decides" not in out
    assert re.search(r"\n  a  right +2/2\n"
                     r"     consistent with your own runs: your best learning rate by final training accuracy is 0\.1\n"
                     r"     you ran 3 of 9 learning rates \(0\.01, 0\.1, 0\.5\)\n  b  right, reason needs review  2/2\n", out)


# without bubblewrap ---------------------------------------------------------------------------------

@pytest.fixture
def no_bwrap(monkeypatch):
    from grader.execution import sandbox

    real_which = sandbox.shutil.which
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None if name == "bwrap" else real_which(name))
    sandbox.sandbox_problem.cache_clear()
    yield
    sandbox.sandbox_problem.cache_clear()


def test_check_runs_the_notebook_unsandboxed_with_one_note_where_bubblewrap_is_missing(tmp_path, monkeypatch, capsys,
                                                                                        no_bwrap):
    code, calls = _fake_notebook_check(tmp_path, monkeypatch, {"write": RIGHT}, reference=False)
    assert code == 0 and calls[0]["sandbox"] is False and calls[0]["warn_unsandboxed"] is False
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("labgrader: bubblewrap is not installed: running your notebook without a sandbox "
                      "(it is your own code)")


def test_grade_still_refuses_without_bubblewrap(tmp_path, capsys, no_bwrap, tiny_data):
    from grader_fixtures import notebook

    notebook(tmp_path / "class" / "alice" / "lab7b.ipynb", {})
    code = main(["grade", str(tmp_path / "class"), "--out", str(tmp_path / "out"), "--no-train-service",
                 "--data-dir", str(tiny_data), "--reference", str(write_artifact(tmp_path / "ref.json"))])
    assert code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"labgrader: {NO_BWRAP}"


# the real notebook, in the sandbox --------------------------------------------------------------------

SETUP = '''import json, torch
from src.fmnist_utils import build_mlp, train
(x_train, y_train), (x_test, y_test) = fmnist_utils.get_data()
def run(lr):
    torch.manual_seed(0)
    model = build_mlp(784, 10, hidden_dim=512)
    return train(loss=torch.nn.CrossEntropyLoss(), model=model, x_train=x_train, y_train=y_train, x_test=x_test,
                 y_test=y_test, optim=optim.SGD(model.parameters(), lr=lr, momentum=0.9), batch_size=128, n_epochs=10)'''
OWN = '''H = {lr: run(lr) for lr in (0.01, 0.1, 0.5)}
train_best = max(H, key=lambda lr: H[lr]["acc"][-1])
test_worst = min(H, key=lambda lr: max(H[lr]["test_acc"]))
test_best = max(H, key=lambda lr: max(H[lr]["test_acc"]))
json.dump({"a": str(train_best), "b": "", "c": 128, "d": ""}, open("7b_ex1.json", "w"))
json.dump({"a": str(test_worst), "b": 128, "c": "", "d": ""}, open("7b_ex2.json", "w"))
print("TEST_BEST", test_best)'''


@pytest.mark.sandbox
def test_a_real_notebook_check_compares_answers_with_the_runs_it_made(tmp_path, tiny_data):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    (tmp_path / "student").mkdir()
    nb = tmp_path / "student" / "lab7b.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(SETUP), new_code_cell(OWN)]), nb)
    run = labgrader("check", nb, "--data-dir", tiny_data, "--json", timeout=400)
    assert run.returncode == 0, run.stderr + run.stdout
    doc = json.loads(run.stdout)
    assert doc["execution"]["status"] == "ok" and doc["reference"] is None
    assert (doc["runs"]["source"], doc["runs"]["calls"], doc["runs"]["counted"]) == ("notebook-reported", 3, 3)
    q = {q["id"]: q for f in doc["files"] for q in f["questions"]}
    assert q["ex1.a"]["coverage"]["lr"]["tried"] == [0.01, 0.1, 0.5]
    assert q["ex1.a"]["consistency"] == "consistent"
    assert q["ex1.a"]["evidence"]["own_best"] == float(q["ex1.a"]["evidence"]["answer"])
    assert q["ex2.a"]["consistency"] == "not consistent"
    test_best = q["ex2.a"]["evidence"]["own_best"]
    assert test_best in (0.01, 0.1, 0.5) and test_best != q["ex2.a"]["evidence"]["answer"]
    assert all(not {"verdict", "points"} & set(q[i]) for i in ("ex1.a", "ex1.b", "ex1.c", "ex2.a", "ex2.b", "ex2.c"))
    from grader.checking.render import print_text

    lines = []
    print_text(doc, write=lines.append)
    text = "\n".join(lines)
    assert "you ran 3 of 9 learning rates (0.01, 0.1, 0.5)" in text
    assert f"not consistent: your own runs point to {test_best:g} (the best learning rate by best test accuracy)" in text
    assert VERDICT.search(text) is None


def test_check_names_why_a_broken_sandbox_cannot_start_and_runs_without_it(tmp_path, monkeypatch, capsys):
    from grader.execution import sandbox

    problem = ("bubblewrap (bwrap) cannot make a sandbox here (setting up uid map: Permission denied); "
               "fix it or pass --no-sandbox")
    monkeypatch.setattr(sandbox, "sandbox_problem", lambda: problem)
    code, calls = _fake_notebook_check(tmp_path, monkeypatch, {"write": RIGHT}, reference=False)
    assert code == 0 and calls[0]["sandbox"] is False
    assert capsys.readouterr().err.splitlines()[0] == (
        "labgrader: the sandbox cannot start here (bubblewrap (bwrap) cannot make a sandbox here (setting up uid map: "
        "Permission denied)): running your notebook without it (it is your own code)")

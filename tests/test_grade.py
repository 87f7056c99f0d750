"""`labgrader grade` with a fake executor: statuses, reasons, outputs, resume, isolation of failures."""

import csv
import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from grader.cli import main
from grader_fixtures import RIGHT, data_folder, install_fake_executor, notebook, write_artifact

ROOT = Path(__file__).resolve().parents[1]
RESULTS_SCHEMA = json.loads((ROOT / "schemas" / "results.schema.json").read_text())
QIDS = ["ex1.a", "ex1.b", "ex1.c", "ex1.d", "ex2.a", "ex2.b", "ex2.c", "ex2.d"]
WRONG = {"7b_ex1.json": {"a": "0.001", "b": "yes", "c": "1024", "d": "fast"},
         "7b_ex2.json": {"a": "1.0", "b": "16", "c": "no", "d": ""}}

CLASS = {
    "alice": {"write": RIGHT},
    "bob": {"write": WRONG},
    "carol": {"status": "error", "cell": 3, "reason": "NameError: name 'x' is not defined",
              "write": {"7b_ex1.json": RIGHT["7b_ex1.json"]}},
    "dave": {"status": "timeout", "cell": 5, "reason": "cell 5: still running after 600 s"},
    "erin": {"status": "memory", "reason": "the kernel used more than 4096 MiB"},
    "frank": {},
    "grace": {"write": {"7b_ex1.json": {"a": "0.1x", "e": 1}, "7b_ex2.json": RIGHT["7b_ex2.json"]}},
    "heidi": {"raise": "boom in the executor"},
    "ivan": {"status": "died", "reason": "the kernel died unexpectedly"},
    "judy": {"write": {"7b_ex1.json": "{not json", "7b_ex2.json": RIGHT["7b_ex2.json"]}},
}
EXPECTED = {
    "alice": ("graded", "all answer files valid", 16),
    "bob": ("graded", "all answer files valid", 0),
    "carol": ("error", "cell 3: NameError: name 'x' is not defined", 8),
    "dave": ("timeout", "cell 5: still running after 600 s", 0),
    "erin": ("memory", "the kernel used more than 4096 MiB", 0),
    "frank": ("no-answers", "the notebook wrote no 7b_ex1.json or 7b_ex2.json", 0),
    "grace": ("invalid-answers", '7b_ex1.json: a: "0.1x" is not a number (and 1 more)', 8),
    "heidi": ("error", "grader failed while executing the notebook: RuntimeError: boom in the executor", 0),
    "ivan": ("error", "the kernel died unexpectedly", 0),
    "judy": ("invalid-answers", "7b_ex1.json: is not valid JSON: Expecting property name enclosed in double quotes (line 1, column 2)", 8),
    "zoe": ("graded", "all answer files valid", 16),
}


@pytest.fixture
def setup(tmp_path, monkeypatch):
    calls = install_fake_executor(monkeypatch)
    subs = tmp_path / "submissions"
    for student, fake in CLASS.items():
        notebook(subs / student / "lab7b.ipynb", fake)
    notebook(subs / "zoe.ipynb", {"write": RIGHT})
    notebook(subs / ".hidden" / "lab.ipynb", {"write": RIGHT})
    (subs / "notes.txt").write_text("not a submission")
    ref = write_artifact(tmp_path / "ref.json")
    data = data_folder(tmp_path / "data")
    out = tmp_path / "out"
    argv = ["grade", str(subs), "--out", str(out), "--reference", str(ref), "--data-dir", str(data)]
    return {"calls": calls, "subs": subs, "out": out, "argv": argv, "data": data}


def results(out: Path) -> dict:
    return {r["student"]: r for r in json.loads((out / "results.json").read_text())["students"]}


def test_every_submission_gets_one_status_and_a_one_line_reason(setup, capsys):
    assert main(setup["argv"]) == 0
    got = results(setup["out"])
    assert sorted(got) == sorted(EXPECTED)
    for student, (status, reason, total) in EXPECTED.items():
        r = got[student]
        assert (r["status"], r["reason"], r["total"]) == (status, reason, total), student
        assert "\n" not in r["reason"]
    assert got["grace"]["errors"] == ['7b_ex1.json: a: "0.1x" is not a number',
                                      "7b_ex1.json: e: unexpected key (allowed: a, b, c, d)"]
    assert got["grace"]["questions"]["ex1.a"]["verdict"] == "wrong"
    assert got["carol"]["questions"]["ex1.a"]["verdict"] == "right"
    assert got["carol"]["questions"]["ex2.a"]["verdict"] == "missing"
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    assert "alice" in out.out and "graded" in out.out and "16/16" in out.out
    assert f"gradebook: {setup['out'] / 'grades.csv'}" in out.out


def test_the_executor_gets_the_spec_preamble_data_dir_and_sandbox(setup):
    main(setup["argv"])
    calls = setup["calls"]
    assert len(calls) == 11
    assert all(c["data_dir"] == setup["data"] and c["sandbox"] is True and c["slot"] == 0 for c in calls)
    assert calls[0]["preamble"] == ("from src import fmnist_utils", "from src.fmnist_utils import *")


def test_gradebook_csv_has_the_promised_columns(setup):
    main(setup["argv"])
    with open(setup["out"] / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
        assert f.seek(0) == 0 and f.readline().strip() == ",".join(["student", "status", "reason", "total", "max", *QIDS, "review"])
    assert [r["student"] for r in rows] == sorted(EXPECTED)
    alice = next(r for r in rows if r["student"] == "alice")
    assert (alice["status"], alice["total"], alice["max"], alice["ex1.a"], alice["review"]) == ("graded", "16", "16", "2", "yes")


def test_results_json_validates_against_its_schema(setup):
    main(setup["argv"])
    doc = json.loads((setup["out"] / "results.json").read_text())
    errors = list(Draft202012Validator(RESULTS_SCHEMA).iter_errors(doc))
    assert errors == []
    assert doc["assignment"] == "7b" and doc["reference"]["data_kind"] == "synthetic" and doc["reference"]["seeds"] == [0, 1, 2]
    assert doc["students"][0]["questions"]["ex1.a"]["expected"] == [0.1, 0.2]
    assert doc["students"][0]["executed"] == "executed/alice.ipynb"
    assert (setup["out"] / "executed" / "alice.ipynb").is_file()


def test_feedback_files_say_status_points_and_why(setup):
    main(setup["argv"])
    fb = setup["out"] / "feedback"
    assert sorted(p.stem for p in fb.glob("*.md")) == sorted(EXPECTED)
    alice = (fb / "alice.md").read_text()
    assert "Status: **graded**" in alice and "Points: **16 of 16**" in alice
    assert "Expected: {0.1, 0.2}" in alice and "Expected a learning rate in the tie set {0.1, 0.2}" in alice
    carol = (fb / "carol.md").read_text()
    assert "Status: **error**: cell 3: NameError: name 'x' is not defined" in carol


def test_hide_answers_keeps_expected_values_out_of_feedback_and_results(setup):
    main(setup["argv"] + ["--hide-answers"])
    bob = (setup["out"] / "feedback" / "bob.md").read_text()
    assert "{0.1, 0.2}" not in bob and "Expected" not in bob and "0.934" not in bob
    assert "Your answer is wrong" in bob
    doc = results(setup["out"])
    assert all(q["expected"] is None for r in doc.values() for q in r["questions"].values())


def test_a_rerun_skips_finished_unchanged_students_and_force_redoes_them(setup, capsys):
    main(setup["argv"])
    assert len(setup["calls"]) == 11
    first = (setup["out"] / "grades.csv").read_text()
    main(setup["argv"])
    assert [c["student"] for c in setup["calls"][11:]] == []
    assert (setup["out"] / "grades.csv").read_text() == first
    assert "11 unchanged submission(s) already graded" in capsys.readouterr().err
    main(setup["argv"] + ["--force"])
    assert len(setup["calls"]) == 22


def test_a_grader_failure_is_stored_and_redone_once_the_submission_changes(setup):
    main(setup["argv"])
    assert json.loads((setup["out"] / ".state" / "heidi.json").read_text())["result"]["status"] == "error"
    assert results(setup["out"])["heidi"]["status"] == "error"
    notebook(setup["subs"] / "heidi" / "lab7b.ipynb", {"write": RIGHT})
    main(setup["argv"])
    assert results(setup["out"])["heidi"]["status"] == "graded"
    assert (setup["out"] / ".state" / "heidi.json").exists()


def test_a_changed_submission_is_redone(setup):
    main(setup["argv"])
    notebook(setup["subs"] / "bob" / "lab7b.ipynb", {"write": RIGHT})
    main(setup["argv"])
    assert sorted(c["student"] for c in setup["calls"][11:]) == ["bob"]
    assert results(setup["out"])["bob"]["total"] == 16


def test_changed_options_redo_everyone(setup):
    main(setup["argv"])
    main(setup["argv"] + ["--timeout", "100"])
    assert len(setup["calls"]) == 22
    assert setup["calls"][-1]["limits"].timeout == 100


def test_an_interrupted_run_resumes_with_the_students_not_yet_finished(setup):
    notebook(setup["subs"] / "dave" / "lab7b.ipynb", {"interrupt": True})
    assert main(setup["argv"]) == 130
    finished = sorted(p.stem for p in (setup["out"] / ".state").glob("*.json"))
    assert finished == ["alice", "bob", "carol"]
    assert sorted(results(setup["out"])) == finished
    notebook(setup["subs"] / "dave" / "lab7b.ipynb", CLASS["dave"])
    calls_before = len(setup["calls"])
    assert main(setup["argv"]) == 0
    redone = sorted(c["student"] for c in setup["calls"][calls_before:])
    assert redone == ["dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "zoe"]
    assert sorted(results(setup["out"])) == sorted(EXPECTED)


def test_a_torn_state_file_is_redone(setup):
    main(setup["argv"])
    (setup["out"] / ".state" / "alice.json").write_text('{"format": "labgrader-state/1", "resu')
    main(setup["argv"])
    assert sorted(c["student"] for c in setup["calls"][11:]) == ["alice"]
    assert results(setup["out"])["alice"]["total"] == 16


def test_parallel_workers_use_their_own_slots(setup):
    assert main(setup["argv"] + ["-j", "2"]) == 0
    assert {c["slot"] for c in setup["calls"]} <= {0, 1}
    assert sorted(results(setup["out"])) == sorted(EXPECTED)


def test_no_execute_scores_the_submitted_json_files(tmp_path, monkeypatch, capsys):
    calls = install_fake_executor(monkeypatch)
    subs = tmp_path / "subs"
    for name, data in RIGHT.items():
        (subs / "ann").mkdir(parents=True, exist_ok=True)
        (subs / "ann" / name).write_text(json.dumps(data))
    (subs / "ben" / "nested").mkdir(parents=True)
    (subs / "ben" / "nested" / "7b_ex1.json").write_text(json.dumps({"a": "0.3", "c": "bad"}))
    (subs / "cat").mkdir()
    notebook(subs / "dan.ipynb", {})
    ref = write_artifact(tmp_path / "ref.json")
    out = tmp_path / "out"
    assert main(["grade", str(subs), "--out", str(out), "--reference", str(ref), "--no-execute", "--json"]) == 0
    assert calls == []
    summary = json.loads(capsys.readouterr().out)
    got = {s["student"]: (s["status"], s["reason"], s["total"]) for s in summary["students"]}
    assert got == {
        "ann": ("graded", "all answer files valid", 16),
        "ben": ("invalid-answers", '7b_ex1.json: c: "bad" is not a whole number', 1),
        "cat": ("no-answers", "the submission holds no 7b_ex1.json or 7b_ex2.json", 0),
        "dan": ("no-answers", "the submission holds no 7b_ex1.json or 7b_ex2.json", 0),
    }
    assert summary["counts"]["graded"] == 1 and summary["graded_now"] == 4
    assert json.loads((out / "results.json").read_text())["options"]["no_execute"] is True


def test_a_missing_submissions_folder_exits_2(tmp_path, capsys):
    ref = write_artifact(tmp_path / "ref.json")
    assert main(["grade", str(tmp_path / "nowhere"), "--reference", str(ref), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == f"labgrader: {tmp_path / 'nowhere'}: no such folder\n"


def test_without_reference_the_demo_is_used_and_said(setup, monkeypatch, capsys):
    import grader.assessment.reference_io as reference_io

    argv = setup["argv"]
    i = argv.index("--reference")
    monkeypatch.setattr(reference_io, "DEMO_REFERENCE", Path(argv[i + 1]))
    assert main(argv[:i] + argv[i + 2:]) == 0
    err = capsys.readouterr().err
    assert "using the bundled demo reference" in err and "synthetic data" in err
    assert json.loads((setup["out"] / "results.json").read_text())["reference"]["demo"] is True


def test_data_dir_falls_back_to_the_environment(setup, monkeypatch, capsys):
    argv = setup["argv"]
    i = argv.index("--data-dir")
    monkeypatch.setenv("LABGRADER_DATA", str(setup["data"]))
    assert main(argv[:i] + argv[i + 2:]) == 0
    assert f"notebooks read their data from {setup['data']} ($LABGRADER_DATA)" in capsys.readouterr().err
    assert all(c["data_dir"] == setup["data"] for c in setup["calls"])


def test_overrides_replace_points_in_outputs_but_not_in_the_store(setup):
    csv_path = setup["out"].parent / "overrides.csv"
    csv_path.write_text("student,question,points,comment\nbob,ex1.d,2,a fine explanation after all\n")
    assert main(setup["argv"] + ["--overrides", str(csv_path)]) == 0
    bob = results(setup["out"])["bob"]
    assert bob["questions"]["ex1.d"]["points"] == 2 and bob["total"] == 2
    assert "a fine explanation after all" in (setup["out"] / "feedback" / "bob.md").read_text()
    stored = json.loads((setup["out"] / ".state" / "bob.json").read_text())["result"]
    assert stored["total"] == 0


def test_a_zip_download_is_unpacked_into_out_and_resumes(setup, capsys):
    import shutil

    archive = shutil.make_archive(str(setup["out"].parent / "class"), "zip", setup["subs"])
    argv = setup["argv"][:]
    argv[1] = archive
    assert main(argv) == 0
    assert sorted(results(setup["out"])) == sorted(EXPECTED)
    assert (setup["out"] / "lms" / "submissions" / "alice").is_dir()
    assert main(argv) == 0
    assert len(setup["calls"]) == 11


def test_a_setup_failure_of_the_executor_stops_the_run_with_one_line(setup, monkeypatch, capsys):
    from grader.common.errors import UserError
    import grader.execution.execute

    def no_sandbox(*args, **kwargs):
        raise UserError("bubblewrap (bwrap) is missing; install it or pass --no-sandbox for trusted notebooks")

    monkeypatch.setattr(grader.execution.execute, "execute_notebook", no_sandbox)
    assert main(setup["argv"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == \
        "labgrader: bubblewrap (bwrap) is missing; install it or pass --no-sandbox for trusted notebooks"
    assert not (setup["out"] / ".state").exists()


def test_a_missing_data_dir_is_a_usage_error(setup, capsys):
    argv = setup["argv"][:]
    argv[argv.index("--data-dir") + 1] = str(setup["data"] / "nope")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert f"data dir {setup['data'] / 'nope'} (--data-dir) is not a folder" in err and err.count("\n") == 0
    assert setup["calls"] == []


def test_a_data_dir_without_the_data_files_stops_before_any_notebook_runs(setup, capsys):
    (setup["data"] / "train-labels-idx1-ubyte.gz").unlink()
    assert main(setup["argv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"labgrader: train-labels-idx1-ubyte.gz is missing from {setup['data']};")
    assert setup["calls"] == [] and not (setup["out"] / "results.json").exists()


def test_an_empty_class_or_zero_jobs_is_a_usage_error_not_an_empty_gradebook(tmp_path, capsys):
    ref = write_artifact(tmp_path / "ref.json")
    (tmp_path / "class").mkdir()
    (tmp_path / "class" / "notes.txt").write_text("no notebooks here")
    argv = ["grade", str(tmp_path / "class"), "--reference", str(ref), "--out", str(tmp_path / "o"), "--no-execute"]
    assert main(argv) == 2
    assert "no submissions found" in capsys.readouterr().err
    assert not (tmp_path / "o" / "grades.csv").exists()
    (tmp_path / "class" / "ann").mkdir()
    assert main(argv + ["-j", "0"]) == 2
    assert capsys.readouterr().err.strip() == "labgrader: -j/--jobs must be at least 1"


def test_each_notebook_gets_the_run_s_checked_data_cache_unless_no_data_cache(tmp_path, monkeypatch, capsys, synthetic_data):
    from reference import datacache

    calls = install_fake_executor(monkeypatch)
    subs = tmp_path / "submissions"
    for student in ("alice", "bob"):
        notebook(subs / student / "lab7b.ipynb", {"write": RIGHT})
    argv = ["grade", str(subs), "--reference", str(write_artifact(tmp_path / "ref.json")),
            "--data-dir", str(synthetic_data), "--data-cache", str(tmp_path / "cache")]
    assert main([*argv, "--out", str(tmp_path / "out1")]) == 0
    folders = {c["data_cache"] for c in calls}
    assert len(folders) == 1 and folders.pop().parent == tmp_path / "cache"
    assert datacache.verify(calls[0]["data_cache"])["n_train"] == 3000
    assert {c["font_cache"].parent for c in calls} == {tmp_path / "cache"}
    err = capsys.readouterr().err
    assert f"labgrader: sandboxes start from decoded data {calls[0]['data_cache']} (built)" in err

    calls.clear()
    assert main([*argv, "--out", str(tmp_path / "out2")]) == 0
    assert "(checked)" in capsys.readouterr().err

    folder = calls[0]["data_cache"]
    with open(folder / "x_test.f4", "r+b") as f:
        f.truncate(100)
    assert main([*argv, "--out", str(tmp_path / "out2b")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert f"labgrader: data cache {folder} is damaged (x_test.f4 has 100 bytes, its manifest says 1568000); " \
           "removing and rebuilding it" in err
    assert any(line.endswith("(built) and matplotlib's font list (found); --no-data-cache decodes the data in each "
                             "sandbox instead") for line in err)
    assert datacache.verify(folder)["n_test"] == 500

    calls.clear()
    assert main([*argv, "--out", str(tmp_path / "out3"), "--no-data-cache"]) == 0
    assert len(calls) == 2 and all(c["data_cache"] is None and c["font_cache"] is None for c in calls)
    assert "labgrader: --no-data-cache: each notebook decodes the gzip files and lists matplotlib's fonts itself" \
        in capsys.readouterr().err.splitlines()


def test_the_training_service_trains_with_every_core_whatever_j_is_and_two_runs_at_once_from_j_2(monkeypatch):
    """The notebooks wait while it trains, so -j does not divide its threads ($OMP_NUM_THREADS still caps
    them); from -j 2 two sessions' runs train side by side, never more."""
    import argparse

    import grader.grade

    def options(jobs):
        o = grader.grade._service_options(argparse.Namespace(jobs=jobs, no_train_service=False, train_cache=None, device=None))
        return o.threads, o.trainers

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for cores in (2, 16):
        monkeypatch.setattr("os.cpu_count", lambda cores=cores: cores)
        assert [options(j) for j in (1, 2, 3, 32)] == [(cores, 1), (cores, 2), (cores, 2), (cores, 2)]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert options(1) == (1, 1) and options(4) == (1, 2)
    assert grader.grade._service_options(argparse.Namespace(jobs=1, no_train_service=True)) is None


def test_an_out_that_cannot_be_written_stops_before_any_notebook_runs(setup, monkeypatch, capsys):
    import errno
    import os
    import tempfile

    setup["out"].mkdir()
    real = tempfile.NamedTemporaryFile

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == setup["out"]:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    assert main(setup["argv"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == \
        f"labgrader: {setup['out']}: cannot write into the output folder: Read-only file system"
    assert setup["calls"] == [] and list(setup["out"].iterdir()) == []


# what a plain class folder holds besides students ----------------------------------------------

@pytest.fixture
def answered(tmp_path, monkeypatch):
    """A class of hand-written answer files (no notebook runs, no figures drawn) and a grade runner."""
    import grader.reports.feedback_html as fh
    import grader.reports.summary as summary

    monkeypatch.setattr(fh, "optimum_plot", lambda *a, **k: None)
    monkeypatch.setattr(summary, "_histogram_png", lambda *a, **k: "")
    monkeypatch.setattr(summary, "_distribution_png", lambda *a, **k: "")
    subs = tmp_path / "class"
    for student in ("ann", "ben", "cat"):
        (subs / student).mkdir(parents=True)
        for name, data in RIGHT.items():
            (subs / student / name).write_text(json.dumps(data))
    ref = write_artifact(tmp_path / "ref.json")

    def grade(source: Path, *extra: str) -> int:
        return main(["grade", str(source), "--reference", str(ref), "--no-execute", *extra])

    return subs, grade


def test_a_student_with_both_a_folder_and_a_notebook_is_refused_alone(answered, capsys):
    subs, grade = answered
    notebook(subs / "ben.ipynb", {})
    assert grade(subs, "--out", str(subs.parent / "out")) == 0
    err = capsys.readouterr().err
    assert "labgrader: refused ben.ipynb: student 'ben' has both a folder and a notebook; the folder is graded, keep one\n" in err
    got = results(subs.parent / "out")
    assert {s: (r["status"], r["total"]) for s, r in got.items()} == {s: ("graded", 16) for s in ("ann", "ben", "cat")}


def test_a_symlinked_student_folder_is_refused_with_a_line(answered, capsys):
    subs, grade = answered
    (subs / "linked").symlink_to(subs / "ann", target_is_directory=True)
    (subs / "linked.ipynb").symlink_to(subs / "ann" / "7b_ex1.json")
    assert grade(subs, "--out", str(subs.parent / "out")) == 0
    err = capsys.readouterr().err
    assert "labgrader: refused linked: symbolic link (not followed)\n" in err
    assert "labgrader: refused linked.ipynb: symbolic link (not followed)\n" in err
    assert sorted(results(subs.parent / "out")) == ["ann", "ben", "cat"]


@pytest.mark.parametrize("inside", ["", "grading-out"])
def test_the_output_folder_inside_the_class_folder_is_never_a_student(answered, capsys, monkeypatch, inside):
    subs, grade = answered
    (subs / "dee").mkdir()
    (subs / "dee" / "results.json").write_text('{"format": "my own", "acc": 0.9}')  # a student's, not labgrader's
    (subs / "dee" / "grades.csv").write_text("epoch,acc\n1,0.9\n")
    monkeypatch.chdir(subs)
    out = subs / inside if inside else subs
    for run in range(2):
        assert (grade(Path(".")) if inside else grade(subs, "--out", str(out))) == 0  # grade . writes ./grading-out
        assert sorted(results(out)) == ["ann", "ben", "cat", "dee"], run
    err = capsys.readouterr().err
    skipped = ["grading-out"] if inside else ["feedback"]
    assert [line.split(":")[1].strip() for line in err.splitlines() if "labgrader's own output" in line] == \
        [f"refused {s}" for s in skipped]


def test_an_empty_output_folder_made_beforehand_inside_the_class_is_not_a_student(answered, capsys):
    subs, grade = answered
    (subs / "marks").mkdir()
    assert grade(subs, "--out", str(subs / "marks")) == 0
    assert sorted(results(subs / "marks")) == ["ann", "ben", "cat"]
    assert "labgrader: refused marks: " in capsys.readouterr().err


def test_json_lists_what_was_refused_for_a_script_that_never_reads_stderr(answered, capsys):
    subs, grade = answered
    (subs / "linked").symlink_to(subs / "ann", target_is_directory=True)
    assert grade(subs, "--out", str(subs.parent / "out"), "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["refused"] == [{"entry": "linked", "reason": "symbolic link (not followed)"}]
    assert sorted(s["student"] for s in doc["students"]) == ["ann", "ben", "cat"]


def test_a_sandbox_slot_held_by_another_run_on_this_host_is_not_used(setup):
    import os

    from grader.execution.slots import claim_slots

    (held, fd), = claim_slots(1)
    try:
        assert main(setup["argv"] + ["-j", "2"]) == 0
    finally:
        os.close(fd)
    used = {c["slot"] for c in setup["calls"]}
    assert used and held not in used and len(used) <= 2

"""`labgrader assign`: the student handout (notebook, kit, README, zip), its refusals, and the handout
notebook executed unchanged in the real sandbox."""

from __future__ import annotations

import io
import json
import os
import zipfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import nbformat
import pytest
from conftest import world_readable

from grader.cli import main
from grader.execution.labnotebook import lab_notebook_path
from reference.kit_install import KIT_FILES

HANDOUT = {"lab7b.ipynb", "README.md", "src/__init__.py", "src/fmnist_utils.py"}


def assign(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["assign", *args])
    return code, out.getvalue(), err.getvalue()


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_assign_writes_the_notebook_the_kit_a_readme_and_the_zip(tmp_path):
    out = tmp_path / "h"
    code, stdout, _ = assign(str(out))
    assert code == 0 and "handout.zip" in stdout
    assert files_under(out) == HANDOUT | {"handout.zip"}
    assert (out / "lab7b.ipynb").read_bytes() == lab_notebook_path().read_bytes()
    for rel, text in KIT_FILES.items():
        assert (out / rel).read_text() == text
    readme = (out / "README.md").read_text()
    for command in ("labgrader data fetch", "labgrader check lab7b.ipynb", "labgrader check 7b_ex1.json", "7b_ex2.json"):
        assert command in readme

    with zipfile.ZipFile(out / "handout.zip") as z:
        assert sorted(z.namelist()) == sorted(f"lab7b/{rel}" for rel in HANDOUT)
        for rel in HANDOUT:
            assert z.read(f"lab7b/{rel}") == (out / rel).read_bytes()


def test_assign_again_replaces_a_previous_handout_with_the_same_bytes(tmp_path):
    out = tmp_path / "h"
    assert assign(str(out))[0] == 0
    first = (out / "handout.zip").read_bytes()
    (out / "src" / "__pycache__").mkdir()
    (out / "src" / "__pycache__" / "fmnist_utils.cpython-311.pyc").write_bytes(b"\0")
    code, stdout, _ = assign(str(out), "--json")
    assert code == 0 and json.loads(stdout)["files"][-1] == "handout.zip"
    assert (out / "handout.zip").read_bytes() == first


@pytest.mark.parametrize("edited", ["lab7b.ipynb", "README.md", "src/fmnist_utils.py"])
def test_an_edited_handout_file_is_kept_unless_forced(tmp_path, edited):
    out = tmp_path / "h"
    assert assign(str(out))[0] == 0
    (out / edited).write_text("my own work")
    code, stdout, err = assign(str(out))
    assert code == 2 and stdout == "" and err.count("\n") == 1
    assert str(out / edited) in err and "--force" in err
    assert (out / edited).read_text() == "my own work"

    assert assign(str(out), "--force")[0] == 0
    assert (out / edited).read_text() != "my own work"


@pytest.mark.parametrize("foreign", ["notes.txt", "src/mine.py", "7b_ex1.json"])
def test_a_folder_with_other_files_is_refused_in_one_line_unless_forced(tmp_path, foreign):
    out = tmp_path / "h"
    (out / foreign).parent.mkdir(parents=True, exist_ok=True)
    (out / foreign).write_text("mine")
    code, stdout, err = assign(str(out))
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and "not a previous handout" in err and foreign in err and "--force" in err
    assert files_under(out) == {foreign}, "nothing written"

    code, _, _ = assign(str(out), "--force")
    assert code == 0
    assert files_under(out) == HANDOUT | {"handout.zip", foreign}
    assert (out / foreign).read_text() == "mine"


def test_a_hostile_file_name_stays_on_one_line(tmp_path):
    out = tmp_path / "h"
    out.mkdir()
    (out / "evil\nname").write_text("x")
    code, _, err = assign(str(out))
    assert code == 2 and err.count("\n") == 1 and "evil\\nname" in err


def test_a_file_as_out_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    code, _, err = assign(str(target))
    assert code == 2 and err.count("\n") == 1 and target.read_text() == "x"


def test_an_unwritable_out_is_one_line(tmp_path):
    if os.geteuid() == 0:
        target = Path("/proc/labgrader-handout")  # even root cannot create folders in /proc
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "h"
    code, _, err = assign(str(target))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.sandbox
def test_the_handout_notebook_runs_unchanged_in_the_sandbox_and_writes_its_answers(tmp_path, tiny_data):
    """As a student gets it from the LMS zip, executed as the grader executes it, with the handout's kit."""
    from grader.execution.execute import execute_notebook, prepare_workdir
    from grader.execution.limits import Limits
    from reference.spec import load_spec

    spec = load_spec()
    out = tmp_path / "h"
    assert assign(str(out))[0] == 0
    with zipfile.ZipFile(out / "handout.zip") as z:
        z.extractall(tmp_path / "student")
    submission = tmp_path / "student" / "lab7b"
    handout_code = [c.source for c in nbformat.read(submission / "lab7b.ipynb", as_version=4).cells if c.cell_type == "code"]

    workdir = tmp_path / "work"
    notebook = prepare_workdir(submission, workdir, answer_files=spec.answer_files)
    assert (workdir / "src" / "fmnist_utils.py").read_text() == KIT_FILES["src/fmnist_utils.py"]
    limits = Limits(timeout=600, cell_timeout=500, memory_mb=4096, processes=64, file_size_mb=64, output_kb=256, cpu_seconds=600)
    result = execute_notebook(notebook, workdir, limits=limits, data_dir=world_readable(tiny_data), preamble=spec.preamble,
                              sandbox=True, slot=41, seed=0, threads=1)

    assert result.status == "ok", result.reason
    for name in spec.answer_files:
        assert json.loads((workdir / name).read_text()) == {"a": "", "b": "", "c": "", "d": ""}
    executed = nbformat.read(result.executed, as_version=4)
    ran = [c for c in executed.cells if c.cell_type == "code"]
    assert [c.source for c in ran][-len(handout_code):] == handout_code, "the handout's cells ran as handed out"
    text = "".join(o.get("text", "") for c in ran for o in c.outputs)
    assert "loaded synthetic Fashion-MNIST" in text and "10/10" in text

"""The lab notebook packaged with labgrader: the export's cells unchanged, the course's additions marked,
the converter that built it, and the notebook run as a student runs it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import nbformat
import pytest

from grader.common.errors import UserError
from grader.execution.labnotebook import (export_cells, is_added, lab_notebook_path, load_lab_notebook,
                                          notebook_from_export)
from reference.kit_install import install_kit
from reference.spec import load_spec

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
EXCERPT = Path(__file__).parent / "data" / "lab7b-export-excerpt.txt"
EMPTY_ANSWERS = {"a": "", "b": "", "c": "", "d": ""}


def _code(cells):
    return [c.source for c in cells if c.cell_type == "code"]


def _markdown(cells):
    return [c.source for c in cells if c.cell_type == "markdown"]


def _build_script():
    spec = importlib.util.spec_from_file_location("build_lab_notebook", ROOT / "scripts" / "build_lab_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_packaged_notebook_holds_the_exports_three_code_cells_exactly():
    nb = load_lab_notebook()
    code = _code(export_cells(nb))
    assert len(code) == 3
    assert code[0].startswith("# Boilerplate code to get started\n\n%load_ext autoreload\n%autoreload \n%matplotlib inline")
    assert code[0].endswith("(x_train, y_train), (x_test, y_test) = fmnist_utils.get_data()")
    assert "CrossEntropyLoss(size_average=True)" in code[1] and code[1].endswith("n_epochs=10)")
    assert code[2] == 'answers = {"a": "", "b": "", "c": "", "d": ""}\njson.dump(answers, open("7b_ex1.json", "w"))'
    md = "\n".join(_markdown(export_cells(nb)))
    assert md.startswith("# Optimizing Neural Networks") and "# Exercise 2: generalization" in md
    assert "a) What was the optimal $\\eta$" in md
    for output in ("autoreload extension is already loaded", "100%|", "it/s]"):
        assert output not in md and all(output not in c for c in code)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    nbformat.validate(nb)


def test_the_course_added_the_setup_and_exercise_2_and_marked_them():
    nb = load_lab_notebook()
    spec = load_spec()
    added = [c for c in nb.cells if is_added(c)]
    assert [c.cell_type for c in added] == ["code", "markdown", "code"]
    setup, questions, answers = added
    assert nb.cells.index(setup) < nb.cells.index(export_cells(nb)[1]), "the setup runs before the export's first cell"
    assert setup.source.splitlines()[-len(spec.preamble):] == list(spec.preamble)
    assert "the course's reconstruction" in questions.source and "not the original text" in questions.source
    for key, needle in (("a", "optimal $\\eta$"), ("b", "optimal $S$"), ("c", "yes or no"), ("d", "dropout or batch normalization")):
        line = next(ln for ln in questions.source.splitlines() if ln.startswith(f"* {key})"))
        assert needle in line
        assert ("test accuracy" in line) == (key != "d")
    assert nb.cells[-2:] == [questions, answers], "Exercise 2 ends the notebook, after the export's lead"
    ex1 = _code(export_cells(nb))[2]
    assert answers.source == ex1.replace("7b_ex1.json", "7b_ex2.json")
    keys = sorted(q.key for q in spec.questions if q.file == "7b_ex2.json")
    schema = json.loads((ROOT / "schemas" / "7b_ex2.schema.json").read_text())
    assert keys == sorted(schema["properties"]) == sorted(EMPTY_ANSWERS)


def test_the_build_script_makes_the_packaged_cells_from_an_export():
    """The excerpt holds the export's code verbatim (its prose shortened): the script rebuilds every code cell."""
    built = _build_script().build(EXCERPT.read_text(encoding="utf-8"))
    packaged = load_lab_notebook()
    assert _code(built.cells) == _code(packaged.cells)
    assert [c.metadata.get("labgrader") for c in built.cells] == [c.metadata.get("labgrader") for c in packaged.cells]
    assert [c["id"] for c in built.cells] == [c["id"] for c in packaged.cells]
    assert _markdown(built.cells)[-1] == _markdown(packaged.cells)[-1]


def test_the_notebook_is_package_data():
    path = lab_notebook_path()
    assert path.is_file() and path == ROOT / "reference" / "lab" / "lab7b.ipynb"
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["reference"]
    assert any(path.relative_to(ROOT / "reference").match(g) for g in globs)


def test_export_excerpt_becomes_three_code_cells_and_drops_the_outputs():
    text = EXCERPT.read_text(encoding="utf-8")
    nb = notebook_from_export(text)
    code = _code(nb.cells)
    assert len(code) == 3 and all(c in text for c in code), "code is verbatim"
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "markdown", "code", "code", "markdown"]
    md = "\n".join(_markdown(nb.cells))
    for output in ("autoreload extension is already loaded", "100%|", "it/s]"):
        assert output in text and output not in md and all(output not in c for c in code)
    nbformat.validate(nb)


def test_export_parsing_rules():
    text = "\n".join([
        "# Title", "", "Intro.", "",
        "In [1]:", "x = dict(a=1,", "", "         b=2)", "", "def f():", "    return 1", "", "    # inside", "",
        "{'a': 1}", "",
        "# Next heading", "", "Some prose here.", "",
        "In [ ]:", "# just a comment", "", "%time y = 2", "!ls", "",
        "Traceback (most recent call last):", "NameError: boom", "",
        "In [3]:", "print(1)", "", "# Last", "", "The end.",
    ])
    nb = notebook_from_export(text)
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "markdown", "code", "code", "markdown"]
    code = _code(nb.cells)
    assert code[0] == "x = dict(a=1,\n\n         b=2)\n\ndef f():\n    return 1\n\n    # inside"
    assert code[1] == "# just a comment\n\n%time y = 2\n!ls"
    assert code[2] == "print(1)"
    assert _markdown(nb.cells) == ["# Title\n\nIntro.", "# Next heading\n\nSome prose here.", "# Last\n\nThe end."]


@pytest.mark.parametrize("content", [None, b"{not json", b'{"cells": 1}'])
def test_an_unreadable_notebook_is_one_line(tmp_path, content):
    path = tmp_path / "lab7b.ipynb"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError) as e:
        load_lab_notebook(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_the_notebook_runs_as_a_student_runs_it_with_the_kit(tmp_path, tiny_data, run_notebook):
    """No grader preamble: the course's setup cell is enough, and both answers cells write their files."""
    nb = load_lab_notebook()
    student_code = _code(nb.cells)
    install_kit(tmp_path)

    run_notebook(nb, tmp_path, env={"LABGRADER_DATA": str(tiny_data), "OMP_NUM_THREADS": "2"}, timeout=120)

    assert _code(nb.cells) == student_code
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    for name in ("7b_ex1.json", "7b_ex2.json"):
        assert json.loads((tmp_path / name).read_text()) == EMPTY_ANSWERS
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "loaded synthetic Fashion-MNIST" in text and "10/10" in text

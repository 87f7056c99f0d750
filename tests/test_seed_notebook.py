"""The lab notebook from its text export, run unchanged with the preamble and the kit."""

from __future__ import annotations

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell

from grader.common.errors import UserError
from grader.execution.labnotebook import load_seed_notebook, notebook_from_export, seed_path
from reference.kit_install import install_kit
from reference.spec import load_spec


def _code(nb):
    return [c.source for c in nb.cells if c.cell_type == "code"]


def _markdown(nb):
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


def test_seed_export_becomes_three_code_cells_exactly_as_exported():
    text = seed_path().read_text(encoding="utf-8")
    nb = load_seed_notebook()
    code = _code(nb)
    assert len(code) == 3
    assert all(c in text for c in code), "code is verbatim"
    assert code[0].startswith("# Boilerplate code to get started\n\n%load_ext autoreload\n%autoreload \n%matplotlib inline")
    assert code[0].endswith("(x_train, y_train), (x_test, y_test) = fmnist_utils.get_data()")
    assert "CrossEntropyLoss(size_average=True)" in code[1] and code[1].endswith("n_epochs=10)")
    assert code[2] == 'answers = {"a": "", "b": "", "c": "", "d": ""}\njson.dump(answers, open("7b_ex1.json", "w"))'
    md = "\n".join(_markdown(nb))
    assert md.startswith("# Optimizing Neural Networks") and "# Exercise 2: generalization" in md
    assert "a) What was the optimal $\\eta$" in md
    for output in ("autoreload extension is already loaded", "100%|", "it/s]"):
        assert output not in md and all(output not in c for c in code)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
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
    code = _code(nb)
    assert code[0] == "x = dict(a=1,\n\n         b=2)\n\ndef f():\n    return 1\n\n    # inside"
    assert code[1] == "# just a comment\n\n%time y = 2\n!ls"
    assert code[2] == "print(1)"
    assert _markdown(nb) == ["# Title\n\nIntro.", "# Next heading\n\nSome prose here.", "# Last\n\nThe end."]


def test_missing_seed_is_one_line(tmp_path):
    with pytest.raises(UserError) as e:
        load_seed_notebook(tmp_path / "none.txt")
    assert "\n" not in str(e.value) and "LABGRADER_SEED" in str(e.value)


def test_seed_path_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LABGRADER_SEED", str(tmp_path / "x.txt"))
    assert seed_path() == tmp_path / "x.txt"


def test_seed_notebook_runs_unchanged_with_preamble_and_kit(tmp_path, synthetic_data, run_notebook):
    nb = load_seed_notebook()
    student_code = _code(nb)
    preamble = "\n".join(load_spec().preamble)
    nb.cells.insert(0, new_code_cell(preamble))
    install_kit(tmp_path)
    nbformat.write(nb, tmp_path / "lab.ipynb")

    run_notebook(nb, tmp_path, env={"LABGRADER_DATA": str(synthetic_data), "OMP_NUM_THREADS": "2"}, timeout=120)

    assert _code(nb)[1:] == student_code
    answers = json.loads((tmp_path / "7b_ex1.json").read_text())
    assert answers == {"a": "", "b": "", "c": "", "d": ""}
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "loaded synthetic Fashion-MNIST" in text and "10/10" in text

"""Scoring is separate from execution: a spec or reference change re-scores stored answers, never re-executes."""

import json

from grader.cli import main
from grader_fixtures import RIGHT, data_folder, install_fake_executor, notebook, write_artifact
from reference.spec import DEFAULT_SPEC, load_spec

ANSWERS = {"7b_ex1.json": {**RIGHT["7b_ex1.json"], "d": "Bigger steps: each update moves further along the gradient."},
           "7b_ex2.json": RIGHT["7b_ex2.json"]}


def _grade(tmp_path, spec, ref):
    code = main(["grade", str(tmp_path / "subs"), "--out", str(tmp_path / "out"), "--reference", str(ref),
                 "--data-dir", str(data_folder(tmp_path / "data")), "--spec", str(spec)])
    assert code == 0
    return {s["student"]: s for s in json.loads((tmp_path / "out" / "results.json").read_text())["students"]}


def test_a_rubric_change_rescores_the_stored_answers_without_executing(tmp_path, monkeypatch):
    calls = install_fake_executor(monkeypatch)
    notebook(tmp_path / "subs" / "ann" / "lab7b.ipynb", {"write": ANSWERS})
    ref = write_artifact(tmp_path / "ref.json")
    first = _grade(tmp_path, DEFAULT_SPEC, ref)["ann"]
    assert len(calls) == 1 and first["questions"]["ex1.d"]["points"] == 2.0
    assert "answer_files" not in first
    stored = json.loads((tmp_path / "out" / ".state" / "ann.json").read_text())["result"]
    assert stored["answer_files"]["7b_ex1.json"]["d"] == ANSWERS["7b_ex1.json"]["d"]

    stricter = tmp_path / "stricter.toml"
    stricter.write_text(DEFAULT_SPEC.read_text().replace("min_keywords = 2, min_length = 40", "min_keywords = 4, min_length = 40"))
    assert load_spec(stricter).question("ex1.d").rubric.min_keywords == 4
    second = _grade(tmp_path, stricter, ref)["ann"]
    assert len(calls) == 1, "a scoring change must not execute the notebook again"
    assert second["questions"]["ex1.d"]["points"] == 1.0 and second["total"] == first["total"] - 1

    other_preamble = tmp_path / "preamble.toml"
    other_preamble.write_text(DEFAULT_SPEC.read_text().replace('"from src.fmnist_utils import *"', '"import math"'))
    _grade(tmp_path, other_preamble, ref)
    assert len(calls) == 2, "what the notebook runs changed: it executes again"

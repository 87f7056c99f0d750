"""Loading a reference artifact: validated against its schema, checked against the spec, one-line errors."""

import json

import pytest

import grader.assessment.reference_io as reference_io
from grader.common.errors import UserError
from grader.assessment.reference_io import check_covers, load_reference, reference_for
from grader_fixtures import make_artifact
from reference.spec import load_spec

SPEC = load_spec()


def write(path, doc):
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_valid_artifact_loads_with_its_hash_and_provenance(tmp_path):
    ref = load_reference(write(tmp_path / "ref.json", make_artifact()))
    assert not ref.demo and len(ref.sha256) == 64
    summary = ref.summary()
    assert (summary["device"], summary["data_kind"], summary["seeds"], summary["epochs"]) == ("cpu", "synthetic", [0, 1, 2], 10)
    assert ref.question("ex1.a")["tie_set"] == [0.1, 0.2]


def test_schema_problems_are_one_line_naming_the_place(tmp_path):
    doc = make_artifact()
    doc["questions"]["ex1.a"]["tie_set"] = "0.1"
    message = error_of(load_reference, write(tmp_path / "ref.json", doc))
    assert message.startswith(f"{tmp_path / 'ref.json'}: not a valid reference artifact: questions.ex1.a: ")


def test_not_json_and_missing_files_are_one_line(tmp_path):
    (tmp_path / "bad.json").write_text("{oops")
    assert error_of(load_reference, tmp_path / "bad.json").startswith(f"{tmp_path / 'bad.json'}: is not a JSON reference artifact")
    assert error_of(load_reference, tmp_path / "none.json") == f"{tmp_path / 'none.json'}: no such reference artifact"


def test_a_missing_demo_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(reference_io, "DEMO_REFERENCE", tmp_path / "gone.json")
    assert error_of(load_reference) == f"the bundled demo reference is missing ({tmp_path / 'gone.json'}); pass --reference REF"


def test_the_self_check_skips_only_the_run_histories(tmp_path):
    doc = make_artifact()
    doc["runs"][0]["history"]["acc"] = ["high"]
    path = write(tmp_path / "ref.json", doc)
    assert "runs[0].history.acc[0]" in error_of(load_reference, path)
    assert load_reference(path, check_runs=False).question("ex2.b")["tie_set"] == [64]


def test_an_artifact_must_cover_every_question_of_the_spec(tmp_path):
    doc = make_artifact()
    del doc["questions"]["ex2.c"]
    ref = load_reference(write(tmp_path / "ref.json", doc))
    assert error_of(check_covers, ref, SPEC).startswith(f"{tmp_path / 'ref.json'}: has no expected answer for question ex2.c of spec lab7b.toml")


def test_another_specs_artifact_is_noted_and_the_demo_is_announced(tmp_path, monkeypatch):
    doc = make_artifact()
    doc["spec_sha256"] = "a" * 64
    notes = []
    reference_for(write(tmp_path / "ref.json", doc), SPEC, notes.append)
    assert len(notes) == 1 and notes[0].startswith("note: ref.json was computed from a different spec than lab7b.toml")
    monkeypatch.setattr(reference_io, "DEMO_REFERENCE", tmp_path / "ref.json")
    notes.clear()
    assert reference_for(None, SPEC, notes.append).demo
    assert len(notes) == 1 and "bundled demo reference" in notes[0] and "synthetic data" in notes[0]

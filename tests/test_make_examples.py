"""scripts/make_examples.py: the committed example submissions are what it builds, and each example's
training is the evidence case submissions/README.md describes (without running a notebook)."""

import ast
import importlib.util
import json
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "reference" / "demo" / "lab7b-synthetic.json"


def _script():
    spec = importlib.util.spec_from_file_location("make_examples", ROOT / "scripts" / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(tmp_path, monkeypatch, *extra: str) -> Path:
    monkeypatch.setattr(sys, "argv", ["make_examples.py", "--reference", str(REFERENCE), "--out", str(tmp_path), *extra])
    _script().main()
    return tmp_path


def _cells(path: Path) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nbformat.read(path, as_version=4).cells]


def _training(path: Path) -> str:
    return _cells(path)[3][1]


def test_the_committed_examples_are_what_the_script_builds(tmp_path, monkeypatch):
    out = _build(tmp_path, monkeypatch)
    built = sorted(p.name for p in out.iterdir())
    assert built == sorted(p.name for p in (ROOT / "submissions").iterdir() if p.is_dir()) == [
        "ada_right", "ben_wrong", "cho_crash", "dev_silent"]
    for student in built:
        assert _cells(out / student / "lab7b.ipynb") == _cells(ROOT / "submissions" / student / "lab7b.ipynb"), student


def test_ada_trains_each_answer_and_the_point_both_sweeps_share_for_the_full_epochs():
    from reference.spec import load_spec

    m = _script()
    ref = json.loads(REFERENCE.read_text())
    spec = load_spec()
    assert m.chosen_configs(spec, ref) == [(0.03, 128), (0.1, 128), (0.1, 256)]
    training = m.chosen_training(spec, ref)
    assert f"n_epochs={spec.epochs})" in training and "optim.SGD(" in training
    r1, r2 = m.right_answers(ref)
    answered_lrs = {float(r1["a"]), float(r2["a"])}
    answered_batches = {int(r1["c"]), int(r2["b"])}
    configs = set(m.chosen_configs(spec, ref))
    assert {(lr, 128) for lr in answered_lrs} <= configs and {(0.1, s) for s in answered_batches} <= configs


def test_ben_answers_values_it_never_trains_and_cho_trains_only_with_adam(tmp_path, monkeypatch):
    out = _build(tmp_path, monkeypatch)
    m = _script()
    ref = json.loads(REFERENCE.read_text())
    w1, w2 = m.wrong_answers(ref)
    ben = _training(out / "ben_wrong" / "lab7b.ipynb")
    trained = ast.literal_eval(ben.split("for lr, batch_size in ", 1)[1].split(":\n", 1)[0])
    assert (float(w1["a"]), 128) not in trained and (float(w2["a"]), 128) not in trained
    assert (0.1, int(w2["b"])) not in trained
    cho = _training(out / "cho_crash" / "lab7b.ipynb")
    assert "optim.Adam(" in cho and "optim.SGD(" not in cho


def test_the_sweep_example_trains_the_whole_lr_grid_and_answers_from_its_results(tmp_path, monkeypatch):
    from reference.spec import load_spec

    out = _build(tmp_path, monkeypatch, "--sweep")
    spec = load_spec()
    cells = _cells(out / "eve_sweep" / "lab7b.ipynb")
    training = cells[3][1]
    lrs = ast.literal_eval(training.split("lrs = ", 1)[1].split("\n", 1)[0])
    assert lrs == list(spec.sweeps["lr"].values) and f"n_epochs={spec.epochs})" in training
    code = [src for kind, src in cells[3:] if kind == "code"]
    for src in code:
        compile(src, "cell", "exec")
    assert sum('json.dump(answers, open("7b_ex' in src for src in code) == 2

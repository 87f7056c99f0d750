"""`labgrader reference run` / `show` end to end on a tiny synthetic set: artifact, resume after kill -9, store binding."""

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from grader.cli import main
from grader.common.errors import UserError
from grader.assessment.reference_io import load_reference
from reference import sweep
from reference.artifact import read_artifact, validation_errors
from reference.runstore import store_path
from reference.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent

TINY_SPEC = textwrap.dedent("""
    [assignment]
    id = "7b"
    title = "tiny sweep"
    answer_files = ["7b_ex1.json", "7b_ex2.json"]
    preamble = []
    [model]
    input_dim = 784
    hidden_dim = 512
    output_dim = 10
    [training]
    epochs = 2
    seeds = [0, 1]
    dtype = "float32"
    [sweeps.lr]
    vary = "lr"
    values = [0.03, 0.1]
    fixed = { batch_size = 64, momentum = 0.9 }
    [sweeps.batch]
    vary = "batch_size"
    values = [32, 64]
    fixed = { lr = 0.1, momentum = 0.9 }
    [scoring]
    z = 2.0
    near_fraction = 0.5
    [[questions]]
    id = "ex1.a"
    file = "7b_ex1.json"
    key = "a"
    kind = "optimum"
    sweep = "lr"
    metric = "final_train_acc"
    points = 2
    [[questions]]
    id = "ex1.b"
    file = "7b_ex1.json"
    key = "b"
    kind = "yesno"
    truth = "test_optimum_in_train_tie_set"
    sweep = "lr"
    points = 2
    answer_points = 1
    rubric = { keywords = ["overfit"], min_keywords = 1, min_length = 10 }
    [[questions]]
    id = "ex1.c"
    file = "7b_ex1.json"
    key = "c"
    kind = "optimum"
    sweep = "batch"
    metric = "best_test_acc"
    points = 2
    [[questions]]
    id = "ex2.c"
    file = "7b_ex2.json"
    key = "c"
    kind = "yesno"
    truth = "noise_rank_correlation_positive"
    sweeps = ["lr", "batch"]
    metric = "best_test_acc"
    points = 2
    answer_points = 1
    rubric = { keywords = ["noise"], min_keywords = 1, min_length = 10 }
    [[questions]]
    id = "ex2.d"
    file = "7b_ex2.json"
    key = "d"
    kind = "text"
    points = 2
    rubric = { keywords = ["noise"], min_keywords = 1, min_length = 10 }
""")
RUNS = 6  # configs (0.03, 64), (0.1, 64), (0.1, 32) x seeds 0, 1


@pytest.fixture
def tiny_spec(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SPEC)
    return path


def run_args(spec, data, out, *extra):
    return ["reference", "run", "--spec", str(spec), "--data-dir", str(data), "--device", "cpu",
            "--out", str(out), *extra]


def run_json(capsys, argv) -> dict:
    capsys.readouterr()
    assert main(argv + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def comparable(artifact: dict) -> dict:
    """The artifact without what differs between invocations by design (times, dates, the command)."""
    doc = json.loads(json.dumps(artifact))
    for key in ("wall_time_s", "created", "command"):
        doc["provenance"].pop(key)
    return doc


# A resumed sweep trains the missing runs in smaller batches than an uninterrupted one. The BLAS
# kernel a batched matmul takes depends on the CPU and the batch shape, so a run's numbers may move
# in the last float32 bits (tests/test_trainer.py measures <= 2.3e-8 in weights, <= 1.7e-8 in
# losses); numbers are compared within 1e-6, everything else (configs, grids, tie sets, counts,
# what diverged) exactly.
FLOAT_TOL = 1e-6


def assert_same_artifact(a, b, where="artifact"):
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), where
        assert a == pytest.approx(b, rel=FLOAT_TOL, abs=FLOAT_TOL), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same_artifact(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_artifact(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.fixture
def uninterrupted(tmp_path_factory, tiny_spec, synthetic_data):
    out = tmp_path_factory.mktemp("full") / "ref.json"
    assert main(run_args(tiny_spec, synthetic_data, out)) == 0
    return read_artifact(out)


def test_run_writes_an_artifact_that_validates(tmp_path, tiny_spec, synthetic_data, capsys):
    out = tmp_path / "ref.json"
    summary = run_json(capsys, run_args(tiny_spec, synthetic_data, out))
    assert (summary["runs"], summary["trained"], summary["reused"]) == (RUNS, RUNS, 0)
    assert (summary["device"], summary["data_kind"], summary["seeds"], summary["epochs"]) == ("cpu", "synthetic", [0, 1], 2)
    doc = json.loads(out.read_text())
    assert validation_errors(doc) == []
    ref = load_reference(out)
    assert ref.summary()["data_kind"] == "synthetic"
    assert len(doc["runs"]) == RUNS and all(len(r["history"]["acc"]) == 2 for r in doc["runs"])
    assert doc["provenance"]["data"]["n_train"] == 3000 and doc["spec_sha256"] == load_spec(tiny_spec).sha256
    assert doc["questions"]["ex1.a"]["grid"] == [0.03, 0.1] and doc["questions"]["ex1.a"]["tie_set"]
    assert isinstance(doc["questions"]["ex2.c"]["truth"], bool)
    store_lines = store_path(out).read_text().splitlines()
    assert len(store_lines) == 1 + RUNS


def _killed_after(k, spec, data, out):
    """Run the CLI in a subprocess that SIGKILLs itself right after its k-th run is stored,
    leaving a half-written line behind as a kill in the middle of a write would."""
    code = textwrap.dedent(f"""
        import os, signal, sys
        import reference.runstore as rs
        append, stored = rs.RunStore.append, []
        def dying_append(self, record):
            append(self, record)
            stored.append(record)
            if len(stored) == {k}:
                with open(self.path, "a") as f:
                    f.write('{{"bind": "{'0' * 8}", "config": {{"lr": 0.')
                    f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        rs.RunStore.append = dying_append
        from grader.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    proc = subprocess.run([sys.executable, "-c", code, *run_args(spec, data, out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def test_killed_sweep_resumes_with_only_the_missing_runs(tmp_path, tiny_spec, synthetic_data, uninterrupted, capsys):
    out = tmp_path / "ref.json"
    _killed_after(2, tiny_spec, synthetic_data, out)
    assert not out.exists()
    lines = store_path(out).read_text().split("\n")
    assert len(lines) == 1 + 2 + 1 and not lines[-1].endswith("}")
    summary = run_json(capsys, run_args(tiny_spec, synthetic_data, out))
    assert (summary["trained"], summary["reused"]) == (RUNS - 2, 2)
    assert_same_artifact(comparable(read_artifact(out)), comparable(uninterrupted))
    again = run_json(capsys, run_args(tiny_spec, synthetic_data, out))
    assert (again["trained"], again["reused"]) == (0, RUNS)


def test_a_half_written_last_line_is_dropped_and_that_run_trains_again(tmp_path, tiny_spec, synthetic_data,
                                                                         uninterrupted, capsys):
    out = tmp_path / "ref.json"
    assert main(run_args(tiny_spec, synthetic_data, out)) == 0
    store = store_path(out)
    text = store.read_text()
    store.write_text(text[:-40])
    summary = run_json(capsys, run_args(tiny_spec, synthetic_data, out))
    assert (summary["trained"], summary["reused"]) == (1, RUNS - 1)
    assert_same_artifact(comparable(read_artifact(out)), comparable(uninterrupted))
    assert store.read_text().endswith("\n") and len(store.read_text().splitlines()) == 1 + RUNS


def test_the_drop_is_reported_on_stderr(tmp_path, tiny_spec, synthetic_data, capsys):
    out = tmp_path / "ref.json"
    assert main(run_args(tiny_spec, synthetic_data, out)) == 0
    store = store_path(out)
    store.write_text(store.read_text()[:-40])
    capsys.readouterr()
    assert main(run_args(tiny_spec, synthetic_data, out)) == 0
    captured = capsys.readouterr()
    assert "dropped 1 unreadable line" in captured.err
    assert "1 trained, 5 reused" in captured.out


def test_a_store_from_another_setup_is_refused_until_fresh(tmp_path, tiny_spec, synthetic_data, capsys):
    out = tmp_path / "ref.json"
    assert main(run_args(tiny_spec, synthetic_data, out)) == 0
    capsys.readouterr()
    assert main(run_args(tiny_spec, synthetic_data, out, "--epochs", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "another setup" in err and "epochs 1 now vs 2 there" in err and "--fresh" in err
    summary = run_json(capsys, run_args(tiny_spec, synthetic_data, out, "--epochs", "1", "--fresh"))
    assert (summary["trained"], summary["epochs"]) == (RUNS, 1)


def test_show_prints_optima_tie_sets_and_provenance_and_plots(tmp_path, tiny_spec, synthetic_data, uninterrupted, capsys):
    from matplotlib.image import imread

    out = tmp_path / "ref.json"
    out.write_text(json.dumps(uninterrupted))
    capsys.readouterr()
    assert main(["reference", "show", str(out), "--plot", str(tmp_path / "plots")]) == 0
    text = capsys.readouterr().out
    for qid in ("ex1.a", "ex1.c"):
        q = uninterrupted["questions"][qid]
        assert qid in text and "{" + ", ".join(f"{v:g}" for v in q["tie_set"]) + "}" in text
    assert "synthetic data" in text and "seeds [0, 1]" in text and "cpu" in text
    assert "Sweep lr" in text and "Sweep batch" in text
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert [p.name for p in pngs] == ["batch.png", "lr.png"]
    for p in pngs:
        image = imread(p)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert main(["reference", "show", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {q["id"] for q in doc["questions"]} == set(uninterrupted["questions"])
    assert doc["provenance"]["data"]["kind"] == "synthetic"


def test_show_refuses_a_bad_or_missing_artifact_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "labgrader-reference/1"}))
    assert main(["reference", "show", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a valid reference artifact" in err
    assert main(["reference", "show", str(tmp_path / "none.json")]) == 2
    assert "no such reference artifact" in capsys.readouterr().err
    nan = tmp_path / "nan.json"
    nan.write_text('{"format": NaN}')
    assert main(["reference", "show", str(nan)]) == 2
    assert "not a JSON number" in capsys.readouterr().err


def test_default_spec_one_epoch_two_seeds_trains_every_run(tmp_path, synthetic_data, capsys):
    """Every configuration of the default grid, once per seed; its speed is benchmarks/sweep_speed.py's to measure."""
    summary = run_json(capsys, ["reference", "run", "--data-dir", str(synthetic_data), "--device", "cpu",
                                "--seeds", "2", "--epochs", "1", "--out", str(tmp_path / "ref.json")])
    assert summary["runs"] == 2 * len(load_spec().configs()) == summary["trained"]
    assert (tmp_path / "ref.json").is_file()


def test_seeds_and_devices(monkeypatch):
    spec = load_spec()
    assert sweep.choose_seeds(spec, None) == list(spec.seeds)
    assert sweep.choose_seeds(spec, 2) == list(spec.seeds[:2])
    assert sweep.choose_seeds(spec, 5) == [0, 1, 2, 3, 4]
    with pytest.raises(UserError):
        sweep.choose_seeds(spec, 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert sweep.resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert sweep.resolve_device("auto").type == "cpu"
    with pytest.raises(UserError, match="no CUDA device"):
        sweep.resolve_device("cuda")


def test_sweep_restores_torch_threads(tmp_path, tiny_spec, synthetic_data):
    before = torch.get_num_threads()
    assert main(run_args(tiny_spec, synthetic_data, tmp_path / "ref.json")) == 0
    assert torch.get_num_threads() == before


def test_out_naming_a_folder_is_refused_before_any_training(tmp_path, tiny_spec, synthetic_data, capsys):
    argv = ["reference", "run", "--spec", str(tiny_spec), "--data-dir", str(synthetic_data), "--out", str(tmp_path)]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"labgrader: --out {tmp_path}: is a folder; give the artifact's file name, e.g. {tmp_path / 'reference.json'}"
    assert not list(tmp_path.glob("*.runs.jsonl"))

"""Metric tables, standard errors, tie sets and the yes/no truths on hand-made runs with known answers."""

import json
import math
import subprocess
import sys
import textwrap

import pytest

from reference import analysis
from reference.spec import load_spec

CHANCE = 0.1


def history(final_train, best_test, epochs=3, diverged_epoch=None):
    """A history whose final train acc and best test acc are the given numbers."""
    acc = [final_train - 0.02, final_train - 0.01, final_train][-epochs:]
    test = [best_test - 0.01, best_test, best_test - 0.005][-epochs:]
    loss, test_loss = [0.5] * epochs, [0.6] * epochs
    if diverged_epoch is not None:
        for e in range(diverged_epoch, epochs):
            acc[e], test[e], loss[e], test_loss[e] = CHANCE, CHANCE, None, None
    return {"acc": acc, "test_acc": test, "loss": loss, "test_loss": test_loss}


def run(lr, bs, mom, seed, final_train, best_test, diverged_epoch=None):
    return {"config": {"lr": lr, "batch_size": bs, "momentum": mom}, "seed": seed,
            "diverged": diverged_epoch is not None, "diverged_epoch": diverged_epoch,
            "history": history(final_train, best_test, diverged_epoch=diverged_epoch)}


SPEC_TOML = textwrap.dedent("""
    [assignment]
    id = "t"
    title = "tiny"
    answer_files = ["a.json"]
    preamble = []
    [model]
    input_dim = 784
    hidden_dim = 512
    output_dim = 10
    [training]
    epochs = 3
    seeds = [0, 1, 2]
    dtype = "float32"
    [sweeps.lr]
    vary = "lr"
    values = [0.01, 0.1, 1.0]
    fixed = { batch_size = 128, momentum = 0.9 }
    [sweeps.batch]
    vary = "batch_size"
    values = [32, 128]
    fixed = { lr = 0.1, momentum = 0.9 }
    [scoring]
    z = 2.0
    near_fraction = 0.5
    [[questions]]
    id = "q.a"
    file = "a.json"
    key = "a"
    kind = "optimum"
    sweep = "lr"
    metric = "final_train_acc"
    points = 2
    [[questions]]
    id = "q.b"
    file = "a.json"
    key = "b"
    kind = "yesno"
    truth = "test_optimum_in_train_tie_set"
    sweep = "lr"
    points = 2
    answer_points = 1
    rubric = { keywords = ["x"], min_keywords = 1, min_length = 1 }
    [[questions]]
    id = "q.c"
    file = "a.json"
    key = "c"
    kind = "yesno"
    truth = "noise_rank_correlation_positive"
    sweeps = ["lr", "batch"]
    metric = "best_test_acc"
    points = 2
    answer_points = 1
    rubric = { keywords = ["x"], min_keywords = 1, min_length = 1 }
    [[questions]]
    id = "q.d"
    file = "a.json"
    key = "d"
    kind = "text"
    points = 2
    rubric = { keywords = ["x"], min_keywords = 1, min_length = 1 }
""")


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(SPEC_TOML)
    return load_spec(path)


def grid_runs():
    """lr 0.1 trains best; lr 1.0 diverges at epoch 1 in every seed; lr 0.01 tests best.

    The batch sweep adds S=32 (lr 0.1); its S=128 point is the lr sweep's lr=0.1 config.
    """
    out = []
    for seed, d in enumerate((-0.002, 0.0, 0.002)):
        out.append(run(0.01, 128, 0.9, seed, 0.80 + d, 0.90 + d))
        out.append(run(0.1, 128, 0.9, seed, 0.95 + d, 0.86 + d))
        out.append(run(1.0, 128, 0.9, seed, 0.5, 0.5, diverged_epoch=1))
        out.append(run(0.1, 32, 0.9, seed, 0.97 + d, 0.88 + d))
    return out


def test_mean_and_standard_error_use_ddof_1_and_zero_for_one_value():
    mean, se = analysis.mean_se([1.0, 2.0, 3.0])
    assert mean == 2.0 and se == pytest.approx(1 / math.sqrt(3))
    assert analysis.mean_se([0.7]) == (0.7, 0.0)


def test_tie_set_uses_z_standard_errors_of_the_difference():
    rows = [{"value": 0.01, "mean": 0.90, "se": 0.010},
            {"value": 0.1, "mean": 0.88, "se": 0.005},   # 0.02 <= 2*sqrt(1e-4 + 2.5e-5) = 0.02236
            {"value": 1.0, "mean": 0.87, "se": 0.005}]   # 0.03 >  0.02236
    assert analysis.tie_set(rows, 2.0) == (0.01, [0.01, 0.1])
    assert analysis.tie_set(rows, 1.0) == (0.01, [0.01])
    exact = [{"value": 1, "mean": 0.5, "se": 0.0}, {"value": 2, "mean": 0.5, "se": 0.0}, {"value": 3, "mean": 0.4, "se": 0.04}]
    assert analysis.tie_set(exact, 2.0) == (1, [1, 2])


def test_spearman_with_average_ranks():
    assert analysis.average_ranks([10, 20, 20, 30]) == [1.0, 2.5, 2.5, 4.0]
    assert analysis.spearman([1, 2, 3, 4], [5, 6, 7, 100]) == pytest.approx(1.0)
    assert analysis.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks x: 1, 2.5, 2.5, 4; y: 1, 3, 2, 4 -> 4.5 / sqrt(4.5 * 5)
    assert analysis.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert analysis.spearman([1, 1, 1], [1, 2, 3]) == 0.0


def test_tables_count_diverged_runs_at_chance_and_never_hold_nan(spec):
    tables = analysis.all_tables(spec, grid_runs(), seeds=[0, 1, 2])
    row = tables["lr"]["final_train_acc"][2]
    assert (row["value"], row["n"], row["n_diverged"], row["per_seed"]) == (1.0, 3, 3, [CHANCE] * 3)
    assert row["mean"] == pytest.approx(CHANCE) and row["se"] == 0.0
    good = tables["lr"]["final_train_acc"][1]
    assert good["per_seed"] == pytest.approx([0.948, 0.95, 0.952]) and good["n_diverged"] == 0
    assert good["se"] == pytest.approx(0.002 / math.sqrt(3))
    assert tables["batch"]["final_train_acc"][1]["per_seed"] == good["per_seed"]
    json.dumps(tables, allow_nan=False)


def test_per_seed_values_follow_the_seed_order_given():
    runs = [run(0.1, 128, 0.9, s, 0.5 + s / 100, 0.5) for s in (2, 0, 1)]
    row = analysis.table_row(0.1, runs, "final_train_acc", seeds=[0, 1, 2])
    assert row["per_seed"] == pytest.approx([0.50, 0.51, 0.52])


def test_expected_answers_on_a_hand_made_sweep(spec):
    tables, questions = analysis.expected_answers(spec, grid_runs(), seeds=[0, 1, 2], source="3 seeds, synthetic data, cpu")
    qa = questions["q.a"]
    assert (qa["best"], qa["tie_set"], qa["grid"]) == (0.1, [0.1], [0.01, 0.1, 1.0])
    assert "3 seeds, synthetic data, cpu" in qa["explanation"]
    qb = questions["q.b"]
    assert qb["truth"] is False and qb["details"]["test_optimum"] == 0.01
    assert qb["explanation"].count(".") >= 1 and "outside" in qb["explanation"]
    qc = questions["q.c"]
    # configs once: (0.01,128) (0.1,128) (1.0,128) (0.1,32): noise ranks 1, 2, 4, 3; mean best test
    # acc 0.90, 0.86, 0.49 (epoch 0 before diverging), 0.88: ranks 4, 2, 1, 3 -> rho = 1 - 6*18/60 = -0.8
    assert qc["details"]["n_configs"] == 4
    assert qc["details"]["rho"] == pytest.approx(-0.8)
    assert qc["truth"] is False
    assert questions["q.d"] == {"kind": "text"}
    json.dumps([tables, questions], allow_nan=False)


def test_test_optimum_inside_the_train_tie_set_is_yes(spec):
    runs = [r for r in grid_runs() if r["config"]["lr"] != 0.01]
    for seed, d in enumerate((-0.03, 0.0, 0.03)):
        runs.append(run(0.01, 128, 0.9, seed, 0.94 + d, 0.87))
    _, questions = analysis.expected_answers(spec, runs, seeds=[0, 1, 2])
    assert questions["q.a"]["tie_set"] == [0.01, 0.1] and questions["q.a"]["best"] == 0.1
    assert questions["q.b"]["details"]["test_optimum"] == 0.01
    assert questions["q.b"]["truth"] is True and "inside" in questions["q.b"]["explanation"]


def test_analysis_artifact_and_show_never_import_torch():
    code = ("import sys; import reference.analysis, reference.artifact, reference.show, reference.runstore; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0

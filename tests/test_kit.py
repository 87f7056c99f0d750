"""The lab kit: get_data, build_mlp, train, and its install as src/fmnist_utils.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from argparse import Namespace

import pytest
import torch

from grader.common.errors import UserError
from reference import kit
from reference.kit_install import install_command, install_kit

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="module")
def data(synthetic_data):
    return kit.get_data(synthetic_data)


def _train(data, lr=0.1, epochs=3, batch_size=128, seed=0, loss=None):
    (x, y), (xt, yt) = data
    torch.manual_seed(seed)
    model = kit.build_mlp(784, 10)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return kit.train(loss or torch.nn.CrossEntropyLoss(), model, x, y, xt, yt, opt, batch_size, epochs)


def test_build_mlp_structure():
    m = kit.build_mlp(784, 10)
    assert isinstance(m, torch.nn.Sequential) and len(m) == 3
    assert isinstance(m[0], torch.nn.Linear) and (m[0].in_features, m[0].out_features) == (784, 512)
    assert isinstance(m[1], torch.nn.ReLU)
    assert isinstance(m[2], torch.nn.Linear) and (m[2].in_features, m[2].out_features) == (512, 10)
    assert kit.build_mlp(20, 3, hidden_dim=7)[0].out_features == 7


def test_get_data_scaling_and_dtypes(data):
    (x, y), (xt, yt) = data
    assert x.shape == (3000, 784) and xt.shape == (500, 784)
    assert x.dtype == xt.dtype == torch.float32 and y.dtype == yt.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert int(y.min()) == 0 and int(y.max()) == 9


def test_get_data_announces_once_on_stderr(synthetic_data, monkeypatch, capsys):
    monkeypatch.setattr(kit, "_announced", False)
    monkeypatch.setenv("LABGRADER_DATA", str(synthetic_data))
    kit.get_data()
    kit.get_data()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "synthetic" in captured.err and str(synthetic_data.resolve()) in captured.err and "3000 train" in captured.err


def test_get_data_missing_dir_is_one_line(tmp_path):
    with pytest.raises(UserError) as e:
        kit.get_data(tmp_path / "nothing")
    assert "\n" not in str(e.value) and str(tmp_path / "nothing") in str(e.value)


def test_train_history(data):
    H = _train(data, epochs=3)
    assert set(H) == {"acc", "test_acc", "loss", "test_loss"}
    assert all(len(v) == 3 for v in H.values())
    assert all(0.0 <= a <= 1.0 for a in H["acc"] + H["test_acc"])
    assert all(isinstance(v, float) for vs in H.values() for v in vs)


def test_train_improves_accuracy(data):
    H = _train(data, lr=0.05, epochs=4)
    assert H["acc"][-1] > H["acc"][0] and H["loss"][-1] < H["loss"][0]
    assert H["test_acc"][-1] > 0.5, "well above chance (0.1) on the small synthetic set"


def test_train_is_seeded_by_torch_manual_seed(data):
    assert _train(data, epochs=2, seed=5) == _train(data, epochs=2, seed=5)
    assert _train(data, epochs=2, seed=5) != _train(data, epochs=2, seed=6)


def test_train_accepts_the_notebooks_legacy_loss(data, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loss = torch.nn.CrossEntropyLoss(size_average=True)
    H = _train(data, epochs=1, loss=loss)
    assert len(H["acc"]) == 1
    assert "1/1" in capsys.readouterr().err, "a tqdm bar over epochs on stderr"


def test_train_test_metrics_match_eval(data):
    (x, y), (xt, yt) = data
    torch.manual_seed(0)
    model = kit.build_mlp(784, 10)
    loss = torch.nn.CrossEntropyLoss()
    H = kit.train(loss, model, x, y, xt, yt, torch.optim.SGD(model.parameters(), lr=0.05), 64, 1)
    with torch.no_grad():
        out = model.cpu()(xt)
    assert H["test_acc"][0] == pytest.approx((out.argmax(1) == yt).float().mean().item())
    assert H["test_loss"][0] == pytest.approx(loss(out, yt).item(), rel=1e-5)


def test_kit_exports_what_the_notebook_uses():
    assert set(kit.__all__) == {"get_data", "build_mlp", "train", "torch", "nn", "optim", "np", "plt"}
    assert kit.optim is torch.optim and kit.nn is torch.nn


def test_installed_shim_imports_in_a_fresh_process(tmp_path, synthetic_data):
    path = install_kit(tmp_path)
    assert path == tmp_path / "src" / "fmnist_utils.py" and (tmp_path / "src" / "__init__.py").is_file()
    code = ("from src import fmnist_utils\nfrom src.fmnist_utils import *\n"
            "(x, y), _ = fmnist_utils.get_data()\n"
            "print(type(build_mlp(784, 10)).__name__, optim.SGD.__name__, np.__name__, plt.__name__, tuple(x.shape))")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "LABGRADER_DATA": str(synthetic_data)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["Sequential", "SGD", "numpy", "matplotlib.pyplot", "(3000,", "784)"]
    assert "synthetic" in r.stderr


def test_install_keeps_a_students_own_kit(tmp_path, capsys):
    own = tmp_path / "src" / "fmnist_utils.py"
    own.parent.mkdir()
    own.write_text("# the student's own\n")
    assert install_kit(tmp_path) == own and own.read_text() == "# the student's own\n"
    install_command(Namespace(dir=str(tmp_path), force=False))
    assert "kept" in capsys.readouterr().out and own.read_text() == "# the student's own\n"
    install_command(Namespace(dir=str(tmp_path), force=True))
    assert "replaced" in capsys.readouterr().out and "reference.kit" in own.read_text()


def test_install_command_on_a_missing_folder(tmp_path):
    with pytest.raises(UserError):
        install_command(Namespace(dir=str(tmp_path / "nope"), force=False))


def test_a_run_trained_in_the_notebook_is_appended_to_the_runs_file(data, tmp_path, monkeypatch):
    from reference.kit_report import RUNS_ENV

    path = tmp_path / "runs.jsonl"
    monkeypatch.setenv(RUNS_ENV, str(path))
    H = _train(data, lr=0.05, epochs=2, batch_size=64)
    model = torch.nn.Sequential(torch.nn.Linear(784, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
    (x, y), (xt, yt) = data
    kit.train(torch.nn.CrossEntropyLoss(), model, x, y, xt, yt, torch.optim.Adam(model.parameters()), 128, 1)
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert first == {"config": {"lr": 0.05, "batch_size": 64, "momentum": 0.9, "hidden": 512, "optimizer": "SGD"},
                     "epochs": 2, "history": H, "note": None}
    assert second["config"] == {"lr": 0.001, "batch_size": 128, "momentum": None, "hidden": 32, "optimizer": "Adam"}
    monkeypatch.setenv(RUNS_ENV, str(tmp_path / "missing-folder" / "runs.jsonl"))
    assert _train(data, epochs=1) == _train(data, epochs=1)

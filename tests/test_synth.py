"""Synthetic Fashion-MNIST: exact format, deterministic, and trains like the real data."""

from __future__ import annotations

import json
import math
from argparse import Namespace

import numpy as np
import pytest

from grader.common.errors import UserError
from reference import fmnist, synth


def _files(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_same_seed_same_bytes(tmp_path):
    a = synth.write_synthetic(tmp_path / "a", n_train=300, n_test=100, seed=3)
    b = synth.write_synthetic(tmp_path / "b", n_train=300, n_test=100, seed=3)
    c = synth.write_synthetic(tmp_path / "c", n_train=300, n_test=100, seed=4)
    assert set(_files(a)) == set(fmnist.FILES) | {fmnist.SYNTHETIC_MARKER}
    assert _files(a) == _files(b)
    assert _files(a)[fmnist.TRAIN_IMAGES] != _files(c)[fmnist.TRAIN_IMAGES]


def test_test_set_does_not_depend_on_train_size(tmp_path):
    a = synth.write_synthetic(tmp_path / "a", n_train=200, n_test=100)
    b = synth.write_synthetic(tmp_path / "b", n_train=500, n_test=100)
    for name in (fmnist.TEST_IMAGES, fmnist.TEST_LABELS):
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_official_format_shapes_and_pixels(synthetic_data):
    for name, magic, shape in ((fmnist.TRAIN_IMAGES, 0x803, (3000, 28, 28)), (fmnist.TRAIN_LABELS, 0x801, (3000,)),
                               (fmnist.TEST_IMAGES, 0x803, (500, 28, 28)), (fmnist.TEST_LABELS, 0x801, (500,))):
        a = fmnist.read_idx(synthetic_data / name, magic)
        assert a.shape == shape and a.dtype == np.uint8
    x, y, _, _, info = fmnist.load_arrays(synthetic_data, download=False)
    assert info.kind == "synthetic"
    assert np.bincount(y, minlength=10).min() >= 250, "every class is well represented"
    assert 0.15 < x.mean() / 255 < 0.45 and (x == 0).mean() > 0.3, "bright garments on a mostly dark background"
    assert x.max() == 255
    marker = json.loads((synthetic_data / fmnist.SYNTHETIC_MARKER).read_text())
    assert marker["seed"] == 0 and marker["n_train"] == 3000 and marker["version"] == synth.VERSION


def test_bad_sizes_are_a_user_error(tmp_path):
    with pytest.raises(UserError):
        synth.write_synthetic(tmp_path, n_train=0, n_test=10)


def test_synth_command_says_synthetic(tmp_path, capsys):
    synth.synth_command(Namespace(out=str(tmp_path / "d"), train=100, test=50, seed=1))
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "SYNTHETIC" in out and str(tmp_path / "d") in out and "100 train" in out


def test_demo_data_dir_made_once_atomically(tmp_path, monkeypatch):
    calls = []
    real = synth.write_synthetic

    def small(out_dir, **kw):
        calls.append(out_dir)
        return real(out_dir, n_train=100, n_test=50)

    monkeypatch.setattr(synth, "write_synthetic", small)
    monkeypatch.setenv("LABGRADER_CACHE", str(tmp_path / "cache"))
    d = synth.demo_data_dir()
    assert d == tmp_path / "cache" / "demo-data-v1" and (d / fmnist.SYNTHETIC_MARKER).is_file()
    assert calls[0] != d, "written into a temp dir, then renamed"
    assert synth.demo_data_dir() == d and len(calls) == 1
    assert [p.name for p in d.parent.iterdir()] == ["demo-data-v1"]


def test_demo_data_dir_default_location(tmp_path, monkeypatch):
    monkeypatch.delenv("LABGRADER_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert synth.demo_cache_dir() == tmp_path / "labgrader" / "demo-data-v1"


@pytest.mark.slow
def test_full_size_trains_like_fashion_mnist(tmp_path):
    """The behaviour the lab's questions rely on, with the kit's MLP, 10 epochs, S=128, mu=0.9."""
    import torch

    from reference import kit

    torch.set_num_threads(min(2, torch.get_num_threads()))
    data = synth.write_synthetic(tmp_path / "full")
    (x, y), (xt, yt) = kit.get_data(data)

    def run(lr):
        torch.manual_seed(0)
        model = kit.build_mlp(784, 10)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        return kit.train(torch.nn.CrossEntropyLoss(), model, x, y, xt, yt, opt, 128, 10)

    good, slow, wild = run(0.1), run(0.001), run(1.0)
    assert 0.80 <= good["acc"][-1] <= 0.99
    assert max(good["test_acc"]) <= good["acc"][-1] - 0.02, "overfits a little, as on the real data"
    assert slow["acc"][-1] <= good["acc"][-1] - 0.05, "lr=0.001 is clearly under-trained after 10 epochs"
    diverged = not all(math.isfinite(v) for v in wild["loss"])
    assert diverged or wild["acc"][-1] < 0.5, "lr=1.0 with momentum 0.9 blows up"

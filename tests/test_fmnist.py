"""Fashion-MNIST files: IDX format, checksums, data dir, download, and one-line errors."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest

from grader.cli import main
from grader.common.errors import UserError
from reference import fmnist


def _cli(*argv, env=None):
    return subprocess.run([sys.executable, "-m", "grader", *argv], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def _one_line(message: str) -> bool:
    return "\n" not in message.strip()


@pytest.fixture
def copy_of(synthetic_data, tmp_path):
    """A private copy of the small synthetic set, free to damage."""
    def copy(real: bool = False) -> Path:
        target = tmp_path / "data"
        shutil.copytree(synthetic_data, target)
        if real:
            (target / fmnist.SYNTHETIC_MARKER).unlink()
        return target
    return copy


def test_idx_round_trip_gzip_and_raw(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    for name, array in (("img.gz", images), ("img", images), ("lab.gz", labels), ("lab", labels)):
        path = fmnist.write_idx(tmp_path / name, array)
        back = fmnist.read_idx(path)
        assert back.dtype == np.uint8 and np.array_equal(back, array)
    assert (tmp_path / "img.gz").read_bytes()[:2] == b"\x1f\x8b"
    raw = (tmp_path / "img").read_bytes()
    assert raw[:4] == (0x803).to_bytes(4, "big") and raw[4:16] == b"".join(n.to_bytes(4, "big") for n in (7, 28, 28))
    assert (tmp_path / "lab").read_bytes()[:8] == (0x801).to_bytes(4, "big") + (7).to_bytes(4, "big")
    assert gzip.decompress((tmp_path / "img.gz").read_bytes()) == raw
    first = (tmp_path / "img.gz").read_bytes()
    fmnist.write_idx(tmp_path / "img.gz", images)
    assert (tmp_path / "img.gz").read_bytes() == first


def test_idx_other_dtypes_round_trip(tmp_path):
    a = np.arange(12, dtype=np.int32).reshape(3, 4) - 5
    back = fmnist.read_idx(fmnist.write_idx(tmp_path / "a.gz", a))
    assert np.array_equal(back, a) and back.dtype == np.int32


@pytest.mark.parametrize("name", ["x.gz", "x"])
def test_truncated_file_is_one_line_naming_it(tmp_path, name):
    path = fmnist.write_idx(tmp_path / name, np.zeros((50, 28, 28), np.uint8) + 7)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(UserError) as e:
        fmnist.read_idx(path, fmnist.IMAGES_MAGIC)
    assert name in str(e.value) and str(tmp_path) in str(e.value) and _one_line(str(e.value))
    assert "truncated" in str(e.value)


def test_wrong_magic_is_one_line_naming_it(tmp_path):
    path = fmnist.write_idx(tmp_path / "labels.gz", np.zeros(10, np.uint8))
    with pytest.raises(UserError) as e:
        fmnist.read_idx(path, fmnist.IMAGES_MAGIC)
    msg = str(e.value)
    assert "labels.gz" in msg and "0x00000801" in msg and "0x00000803" in msg and _one_line(msg)
    path.write_bytes(b"not an idx file at all")
    with pytest.raises(UserError, match="not an IDX file"):
        fmnist.read_idx(path)


def test_trailing_bytes_are_an_error(tmp_path):
    path = tmp_path / "raw"
    path.write_bytes(fmnist.idx_bytes(np.zeros(4, np.uint8)) + b"\0\0")
    with pytest.raises(UserError, match="2 bytes after"):
        fmnist.read_idx(path)


def test_load_arrays_synthetic(synthetic_data):
    x, y, xt, yt, info = fmnist.load_arrays(synthetic_data, download=False)
    assert x.shape == (3000, 784) and xt.shape == (500, 784)
    assert x.dtype == y.dtype == np.uint8 and y.shape == (3000,) and yt.shape == (500,)
    assert info.kind == "synthetic" and info.n_train == 3000 and info.n_test == 500
    assert info.dir == str(Path(synthetic_data).resolve())
    assert set(info.sha256) == set(fmnist.FILES)
    for name, digest in info.sha256.items():
        assert digest == hashlib.sha256((Path(synthetic_data) / name).read_bytes()).hexdigest()
    assert info.as_dict() == {"kind": "synthetic", "dir": info.dir, "n_train": 3000, "n_test": 500, "sha256": info.sha256}


def test_real_dir_checks_official_checksums(copy_of, monkeypatch):
    data = copy_of(real=True)
    with pytest.raises(UserError) as e:
        fmnist.load_arrays(data, download=False)
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz" in msg and "md5" in msg and str(data) in msg and _one_line(msg)
    monkeypatch.setattr(fmnist, "MD5", {n: hashlib.md5((data / n).read_bytes()).hexdigest() for n in fmnist.FILES})
    *_, info = fmnist.load_arrays(data, download=False)
    assert info.kind == "real"


def test_raw_files_without_gz_are_read(copy_of):
    data = copy_of()
    for name in fmnist.FILES:
        (data / name[:-3]).write_bytes(gzip.decompress((data / name).read_bytes()))
        (data / name).unlink()
    x, y, *_ = fmnist.load_arrays(data, download=False)
    assert x.shape == (3000, 784) and y.shape == (3000,)


def test_size_mismatch_between_images_and_labels(copy_of):
    data = copy_of()
    labels = fmnist.read_idx(data / fmnist.TEST_LABELS)
    fmnist.write_idx(data / fmnist.TEST_LABELS, labels[:-1])
    with pytest.raises(UserError) as e:
        fmnist.load_arrays(data, download=False)
    msg = str(e.value)
    assert fmnist.TEST_LABELS in msg and "499 labels" in msg and "500 images" in msg and _one_line(msg)
    assert f"labgrader data synth --out {data}" in msg


def test_images_and_labels_swapped(copy_of):
    data = copy_of()
    a, b = data / fmnist.TRAIN_IMAGES, data / fmnist.TRAIN_LABELS
    a.rename(data / "tmp")
    b.rename(a)
    (data / "tmp").rename(b)
    with pytest.raises(UserError, match="magic number 0x00000801, expected 0x00000803"):
        fmnist.load_arrays(data, download=False)


def test_missing_file_names_it_and_where(copy_of):
    data = copy_of()
    (data / fmnist.TEST_IMAGES).unlink()
    with pytest.raises(UserError) as e:
        fmnist.load_arrays(data)
    msg = str(e.value)
    assert fmnist.TEST_IMAGES in msg and "missing" in msg and str(data) in msg and _one_line(msg)


def test_offline_download_is_one_clear_line(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(fmnist, "urlopen", offline)
    target = tmp_path / "fm"
    with pytest.raises(UserError) as e:
        fmnist.load_arrays(target)
    msg = str(e.value)
    assert "cannot download train-images-idx3-ubyte.gz" in msg and fmnist.MIRROR in msg
    assert str(target) in msg and _one_line(msg)
    assert not any(target.iterdir()), "no partial download may be left behind"


def test_download_checks_md5_and_keeps_nothing_bad(tmp_path, monkeypatch):
    monkeypatch.setattr(fmnist, "urlopen", lambda url, timeout=None: io.BytesIO(b"<html>not found</html>"))
    with pytest.raises(UserError, match="md5") as e:
        fmnist.load_arrays(tmp_path)
    assert _one_line(str(e.value)) and list(tmp_path.iterdir()) == []


def test_download_fetches_missing_files(tmp_path, synthetic_data, monkeypatch):
    served = {n: (Path(synthetic_data) / n).read_bytes() for n in fmnist.FILES}
    monkeypatch.setattr(fmnist, "MD5", {n: hashlib.md5(b).hexdigest() for n, b in served.items()})
    urls = []

    def serve(url, timeout=None):
        urls.append(url)
        return io.BytesIO(served[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(fmnist, "urlopen", serve)
    x, *_, info = fmnist.load_arrays(tmp_path / "new")
    assert urls == [fmnist.MIRROR + n for n in fmnist.FILES] and info.kind == "real" and len(x) == 3000
    fmnist.load_arrays(tmp_path / "new")
    assert len(urls) == 4


def test_fetch_command_offline_exits_2(tmp_path, monkeypatch, capsys):
    def offline(url, timeout=None):
        raise URLError("network unreachable")

    monkeypatch.setattr(fmnist, "urlopen", offline)
    assert main(["data", "fetch", "--data-dir", str(tmp_path / "fm")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labgrader: cannot download") and err.count("\n") == 1


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("LABGRADER_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert fmnist.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert fmnist.resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("LABGRADER_DATA")
    assert fmnist.resolve_data_dir() == tmp_path / "xdg" / "labgrader" / "fashion-mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert fmnist.resolve_data_dir() == tmp_path / "home" / ".cache" / "labgrader" / "fashion-mnist"


def test_cli_synth_then_corruption_exits_2_without_traceback(tmp_path):
    out = tmp_path / "d"
    r = _cli("data", "synth", "--out", str(out), "--train", "2000", "--test", "500")
    assert r.returncode == 0, r.stderr
    assert "synthetic" in r.stdout.lower() and str(out) in r.stdout and r.stdout.count("\n") == 1
    x, y, xt, yt, info = fmnist.load_arrays(out, download=False)
    assert (len(x), len(xt), info.kind) == (2000, 500, "synthetic")

    (out / fmnist.SYNTHETIC_MARKER).unlink()
    path = out / fmnist.TRAIN_IMAGES
    path.write_bytes(path.read_bytes()[:-9])
    r = _cli("data", "fetch", "--data-dir", str(out), env={"LABGRADER_DEBUG": ""})
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert fmnist.TRAIN_IMAGES in r.stderr and "md5" in r.stderr and str(out) in r.stderr


def test_fetch_refuses_a_synthetic_dir(synthetic_data, capsys):
    assert main(["data", "fetch", "--data-dir", str(synthetic_data)]) == 2
    assert "synthetic" in capsys.readouterr().err


def test_fmnist_does_not_import_torch():
    code = "import sys, reference.fmnist, reference.synth, reference.kit_install, grader.execution.labnotebook; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr

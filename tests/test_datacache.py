"""The decoded data cache: the kit's tensors from it equal decoding the gzip files; a damaged cache
is detected, named and rebuilt; students' in-place edits stay private; the font list is built once."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from grader.execution import fontcache
from grader.grading.caches import prepare_caches
from reference import datacache, fmnist, kit


@pytest.fixture
def root(tmp_path):
    return tmp_path / "cache-root"


@pytest.fixture
def bound(synthetic_data, root, monkeypatch):
    """A cache built for the small synthetic set and named to the kit as the sandbox names it."""
    folder, how = datacache.prepare(synthetic_data, root)
    assert how == "built"
    monkeypatch.setenv("LABGRADER_DATA", str(synthetic_data))
    monkeypatch.setenv(datacache.KIT_ENV, str(folder))
    return folder


def decoded(data_dir):
    """get_data as it is without a cache: the gzip files decoded."""
    x_train, y_train, x_test, y_test, _ = fmnist.load_arrays(data_dir, download=False)
    return kit.as_tensors(x_train, y_train, x_test, y_test)


def flat(data):
    return [*data[0], *data[1]]


def same(a, b) -> bool:
    return all(p.dtype == q.dtype and p.shape == q.shape and torch.equal(p, q) for p, q in zip(flat(a), flat(b)))


def mapped(folder):
    """The cache's arrays as the kit maps them, as tensors in get_data's order."""
    arrays, _ = datacache.open_mapped(folder)
    t = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
    return (t["x_train"], t["y_train"]), (t["x_test"], t["y_test"])


# (a) the same tensors ------------------------------------------------------------------------------

def test_get_data_from_the_cache_equals_decoding_the_gzip_files(bound, synthetic_data, monkeypatch, capsys):
    monkeypatch.setattr(kit, "_announced", False)
    fresh = decoded(synthetic_data)
    got = kit.get_data()
    assert "(decoded cache)" in capsys.readouterr().err
    assert [t.dtype for t in flat(got)] == [torch.float32, torch.int64, torch.float32, torch.int64]
    assert [tuple(t.shape) for t in flat(got)] == [(3000, 784), (3000,), (500, 784), (500,)]
    assert same(got, fresh)
    assert same(kit.get_data(synthetic_data), fresh), "the grader's data dir named explicitly also maps the cache"


def test_the_manifest_records_what_the_service_compares(bound, synthetic_data):
    manifest = datacache.verify(bound)
    x_train, y_train, x_test, y_test, info = fmnist.load_arrays(synthetic_data, download=False)
    assert manifest["fingerprint"] == fmnist.fingerprint(x_train, y_train, x_test, y_test)
    assert manifest["gzip_sha256"] == info.sha256
    assert (manifest["kind"], manifest["n_train"], manifest["n_test"]) == ("synthetic", 3000, 500)
    assert manifest["dir"] == str(Path(synthetic_data).resolve())
    assert {k: (v["dtype"], v["shape"]) for k, v in manifest["files"].items()} == {
        "x_train": ("<f4", [3000, 784]), "y_train": ("<i8", [3000]), "x_test": ("<f4", [500, 784]), "y_test": ("<i8", [500])}
    assert oct(bound.stat().st_mode & 0o777) == "0o755"
    assert all(oct(p.stat().st_mode & 0o777) == "0o644" for p in bound.iterdir())


def test_the_training_service_gets_the_cache_fingerprint(bound, synthetic_data, monkeypatch):
    from reference import kit_remote

    seen = {}
    monkeypatch.setattr(kit_remote, "socket_path", lambda: "/nonexistent.sock")
    monkeypatch.setattr(kit_remote, "remember", lambda tensors, fingerprint: seen.update(t=tensors, f=fingerprint))
    got = kit.get_data()
    x_train, y_train, x_test, y_test, _ = fmnist.load_arrays(synthetic_data, download=False)
    assert seen["f"] == fmnist.fingerprint(x_train, y_train, x_test, y_test)
    assert all(a is b for a, b in zip(seen["t"], flat(got)))


def test_mapped_tensors_pass_the_kits_data_checks(bound):
    from reference import kit_remote

    (x, y), (xt, yt) = data = kit.get_data()
    kit_remote.remember(flat(data), "fingerprint")
    assert kit_remote._data_problem((x, y, xt, yt)) is None
    x[1, 2] += 1.0
    assert kit_remote._data_problem((x, y, xt, yt)) is not None, "an edited mapped tensor is noticed"


def test_another_data_dir_or_no_cache_decodes_the_gzip_files(bound, synthetic_data, tiny_data, monkeypatch, capsys):
    monkeypatch.setattr(kit, "_announced", False)
    other = kit.get_data(tiny_data)
    assert len(other[0][0]) == 600 and "(decoded cache)" not in capsys.readouterr().err
    monkeypatch.delenv(datacache.KIT_ENV)
    monkeypatch.setattr(kit, "_announced", False)
    kit.get_data()
    assert "(decoded cache)" not in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["missing file", "short file", "garbled manifest"])
def test_a_cache_amiss_inside_the_sandbox_falls_back_to_the_gzip_files_silently(damage, bound, synthetic_data, monkeypatch, capsys):
    copy = bound.parent / "copy"
    shutil.copytree(bound, copy)
    monkeypatch.setenv(datacache.KIT_ENV, str(copy))
    if damage == "missing file":
        (copy / "y_test.i8").unlink()
    elif damage == "short file":
        with open(copy / "x_train.f4", "r+b") as f:
            f.truncate(1000)
    else:
        (copy / "manifest.json").write_text("{not json")
    monkeypatch.setattr(kit, "_announced", False)
    got = kit.get_data()
    err = capsys.readouterr().err
    assert "(decoded cache)" not in err and err.count("\n") == 1
    assert same(got, decoded(synthetic_data))


# (b) damage is detected and rebuilt ----------------------------------------------------------------

def _truncate(folder):
    with open(folder / "x_train.f4", "r+b") as f:
        f.truncate(4000)


def _edit_byte(folder):
    with open(folder / "x_test.f4", "r+b") as f:
        f.seek(12345)
        byte = f.read(1)
        f.seek(12345)
        f.write(bytes([byte[0] ^ 0x40]))


def _garble(folder):
    (folder / "manifest.json").write_text('{"format": "labgrader-decoded/1", "files": [')


def _drop_manifest(folder):
    (folder / "manifest.json").unlink()


def _private(folder):
    (folder / "y_test.i8").chmod(0o600)


def _wrong_shape(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["y_train"]["shape"] = [2999]
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, reason", [
    (_truncate, "x_train.f4 has 4000 bytes, its manifest says 9408000"),
    (_edit_byte, "x_test.f4 does not match its sha256 in the manifest"),
    (_garble, "manifest.json cannot be read (JSONDecodeError)"),
    (_drop_manifest, "manifest.json is missing"),
    (_wrong_shape, "manifest.json gives y_train a size or name that does not fit its shape"),
    (_private, "y_test.i8 is not world-readable"),
])
def test_a_damaged_cache_is_named_removed_and_rebuilt(damage, reason, synthetic_data, root):
    folder, _ = datacache.prepare(synthetic_data, root)
    damage(folder)
    with pytest.raises(datacache.CacheProblem, match=re.escape(reason)):
        datacache.verify(folder)
    said = []
    again, how = datacache.prepare(synthetic_data, root, said.append)
    assert (again, how) == (folder, "built")
    assert said == [f"data cache {folder} is damaged ({reason}); removing and rebuilding it"]
    datacache.verify(folder)
    assert same(mapped(folder), decoded(synthetic_data))
    assert sorted(p.name for p in root.iterdir()) == [folder.name], "no temp or damaged folder is left behind"


def test_an_intact_cache_is_checked_not_rebuilt(synthetic_data, root):
    folder, how = datacache.prepare(synthetic_data, root)
    before = (folder / "x_train.f4").stat().st_ino
    said = []
    assert datacache.prepare(synthetic_data, root, said.append) == (folder, "checked")
    assert said == [] and (folder / "x_train.f4").stat().st_ino == before


def test_the_cache_is_keyed_by_the_data_files(synthetic_data, tiny_data, root):
    small, _ = datacache.prepare(synthetic_data, root)
    tiny, _ = datacache.prepare(tiny_data, root)
    assert small != tiny and small.parent == tiny.parent == root
    assert datacache.verify(tiny)["n_train"] == 600


def test_a_rename_that_loses_to_another_grader_uses_theirs(synthetic_data, root, monkeypatch):
    """Two graders building at once: the second rename fails on the first's folder, which is checked and used."""
    first, _ = datacache.prepare(synthetic_data, root)
    calls = []
    real_lexists = os.path.lexists

    def absent_once(path):
        if Path(path) == first and not calls:
            calls.append(path)
            return False
        return real_lexists(path)

    monkeypatch.setattr(datacache.os.path, "lexists", absent_once)
    assert datacache.prepare(synthetic_data, root) == (first, "checked")
    assert calls and sorted(p.name for p in root.iterdir()) == [first.name]


def test_an_unwritable_cache_folder_is_one_line_and_grading_goes_on(synthetic_data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    said = []
    data_cache, font_cache = prepare_caches(synthetic_data, blocker / "root", data=True, say=said.append)
    assert data_cache is None and font_cache is None
    assert len(said) == 2 and all("\n" not in line for line in said)
    assert said[0].startswith(f"no decoded data cache in {blocker / 'root'}: ") and "Not a directory" in said[0]


# (c) students' edits stay private ------------------------------------------------------------------

def test_editing_the_tensors_in_place_touches_neither_the_file_nor_the_next_call(bound):
    (x_train, y_train), _ = kit.get_data()
    original = x_train[0].clone()
    x_train[0] = 5
    y_train[:10] = 7
    assert float(x_train[0, 0]) == 5.0
    datacache.verify(bound)
    (again, labels), _ = kit.get_data()
    assert torch.equal(again[0], original) and not torch.equal(labels[:10], torch.full((10,), 7))


# the font list ------------------------------------------------------------------------------------

def test_the_font_list_is_built_once_and_copied_into_a_fresh_config_dir(tmp_path):
    folder, how = fontcache.prepare(tmp_path / "root")
    assert how == "built"
    lists = list(folder.glob("fontlist-*.json"))
    assert len(lists) == 1 and json.loads(lists[0].read_text())["ttflist"]
    assert fontcache.prepare(tmp_path / "root") == (folder, "found")
    config = tmp_path / "home" / ".labgrader" / "matplotlib"
    fontcache.seed(folder, config)
    assert (config / lists[0].name).read_bytes() == lists[0].read_bytes()
    fontcache.seed(None, tmp_path / "other")
    assert not (tmp_path / "other").exists()

"""Atomic writes (grader/atomic.py) and the run store's handling of damaged or foreign lines."""

import json
import math
import os
import stat

import pytest

from grader.common.atomic import write_json_atomic, write_text_atomic
from grader.common.errors import UserError
from reference.runstore import RunStore, store_path


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "a.json"
    write_json_atomic(target, {"x": 1})
    write_json_atomic(target, {"x": [1, 2]})
    assert json.loads(target.read_text()) == {"x": [1, 2]}
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_atomic_write_refuses_nan_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.json"
    write_json_atomic(target, {"x": 1})
    with pytest.raises(ValueError):
        write_json_atomic(target, {"x": math.nan})
    assert json.loads(target.read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_write_keeps_permissions_and_new_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        fresh = write_text_atomic(tmp_path / "new.txt", "hi")
    finally:
        os.umask(old)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
    fresh.chmod(0o600)
    write_text_atomic(fresh, "again")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600 and fresh.read_text() == "again"


BINDING = {"spec_sha256": "0" * 64, "seeds": [0], "epochs": 1, "dtype": "float32", "device": "cpu"}


def record(seed):
    return {"config": {"lr": 0.1, "batch_size": 64, "momentum": 0.9}, "seed": seed, "diverged": False,
            "diverged_epoch": None, "history": {"acc": [0.5], "test_acc": [0.5], "loss": [1.0], "test_loss": [1.0]}}


def test_store_keeps_its_runs_ignores_foreign_and_broken_lines(tmp_path):
    path = store_path(tmp_path / "ref.json")
    assert path.name == "ref.runs.jsonl"
    store = RunStore.open(path, BINDING, epochs=1)
    store.append(record(0))
    store.append(record(1))
    with open(path, "a") as f:
        f.write(json.dumps(dict(record(2), bind="someone-else")) + "\n")
        f.write(json.dumps(dict(record(3), bind=store.bind, history={"acc": [0.5, 0.6]})) + "\n")
        f.write('{"bind": "' + store.bind + '", "conf')
    again = RunStore.open(path, BINDING, epochs=1)
    assert again.dropped == 3 and sorted(k[-1] for k in again.runs) == [0, 1]
    assert len(path.read_text().splitlines()) == 3 and path.read_text().endswith("\n")


def test_store_of_another_setup_is_refused_in_one_line(tmp_path):
    path = tmp_path / "ref.runs.jsonl"
    RunStore.open(path, BINDING, epochs=1).append(record(0))
    with pytest.raises(UserError) as info:
        RunStore.open(path, dict(BINDING, dtype="float64"), epochs=1)
    message = str(info.value)
    assert "\n" not in message and 'dtype "float64" now vs "float32" there' in message and "--fresh" in message
    fresh = RunStore.open(path, dict(BINDING, dtype="float64"), epochs=1, fresh=True)
    assert fresh.runs == {} and len(path.read_text().splitlines()) == 1
    path.write_text("not json at all\n")
    with pytest.raises(UserError, match="no readable header"):
        RunStore.open(path, BINDING, epochs=1)

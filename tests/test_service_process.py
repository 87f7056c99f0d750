"""The training service in its own process: what a crash of that process does to the notebooks waiting on it,
to the next requests and to the run's counts (one restart, then every run trains in its notebook)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from nbformat.v4 import new_code_cell, new_notebook

from grader.service.server import ServiceOptions, TrainingService
from reference import kit, trainrequest
from reference.fmnist import fingerprint, load_arrays

ROOT = Path(__file__).resolve().parents[1]


class Waiter:
    """Stands for a notebook's session: the batcher charges it the epochs it waits for."""

    def __init__(self):
        self.seconds = 0.0

    def charge(self, seconds: float) -> None:
        self.seconds += seconds


def request(data_dir, *, lr: float, epochs: int) -> trainrequest.TrainRequest:
    x_train, y_train, x_test, y_test, _ = load_arrays(data_dir, download=False)
    torch.manual_seed(0)
    model = kit.build_mlp(784, 10)
    header, tensors = trainrequest.build(data=fingerprint(x_train, y_train, x_test, y_test), lr=lr, momentum=0.9,
                                         batch_size=16, epochs=epochs, params=list(model.parameters()),
                                         rng=torch.get_rng_state())
    return trainrequest.parse(header, tensors, input_dim=784, classes=10)


def soon(check, seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_a_killed_service_process_sends_its_waiters_to_the_notebook_is_restarted_once_then_left(synthetic_data, tmp_path):
    said = []
    svc = TrainingService(ServiceOptions(cache_dir=str(tmp_path / "memo"), gather_s=0.1, threads=1), synthetic_data,
                          say=said.append).start()
    try:
        remote, waiter = svc.batcher, Waiter()
        first_pid = remote.child.proc.pid
        fut, how, key = remote.submit(request(synthetic_data, lr=0.05, epochs=500), waiter)
        assert how == "trained" and key
        assert soon(lambda: waiter.seconds > 0), "the service never started training"
        os.kill(first_pid, signal.SIGKILL)
        answer = fut.result(timeout=60)
        assert answer["local"].startswith("the training service's process was killed by SIGKILL")
        assert len(said) == 1 and "starting it again (once)" in said[0] and "SIGKILL" in said[0]

        assert soon(lambda: remote.child is not None and remote.child.proc.pid != first_pid)
        fut, how, _ = remote.submit(request(synthetic_data, lr=0.06, epochs=1), waiter)
        answer = fut.result(timeout=120)
        assert how == "trained" and isinstance(answer, trainrequest.TrainAnswer)

        os.kill(remote.child.proc.pid, signal.SIGKILL)
        assert soon(lambda: remote.gone is not None)
        fut, how, _ = remote.submit(request(synthetic_data, lr=0.07, epochs=1), waiter)
        assert how == "failed" and "not restarted again" in fut.result(timeout=5)["local"]
        summary = svc.summary()
        assert (summary["failures"], summary["restarts"], summary["process"]) == (2, 1, True)
        assert summary["trained"] == 1
    finally:
        svc.close()


def test_a_service_that_cannot_start_says_why_in_one_line(tmp_path):
    svc = TrainingService(ServiceOptions(cache_dir=str(tmp_path / "memo")), tmp_path / "no-data-here")
    from grader.common.errors import UserError

    with pytest.raises(UserError) as e:
        svc.start()
    assert "no Fashion-MNIST data dir" in str(e.value) and "\n" not in str(e.value)
    assert svc.batcher is None


SETUP = ("import torch\nfrom src.fmnist_utils import build_mlp, train\n"
         "(x_train, y_train), (x_test, y_test) = fmnist_utils.get_data()")
TRAIN = '''model = build_mlp(784, 10, hidden_dim=512)
optimizer = optim.SGD(model.parameters(), lr={lr}, momentum=0.9)
H = train(loss=torch.nn.CrossEntropyLoss(), model=model, x_train=x_train, y_train=y_train, x_test=x_test,
          y_test=y_test, optim=optimizer, batch_size=16, n_epochs=6)
import json
json.dump({{"a": "0.03", "b": "yes, it underfits", "c": 256, "d": ""}}, open("7b_ex1.json", "w"))'''


def _worker_of(parent: int) -> int | None:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"grader.service.worker" in cmd:
            return int(entry)
    return None


@pytest.mark.sandbox
def test_grading_goes_on_when_the_service_process_is_killed_mid_training(synthetic_data, tmp_path):
    subs = tmp_path / "class"
    for name, lr in (("s1", 0.1), ("s2", 0.2)):
        (subs / name).mkdir(parents=True)
        nbformat.write(new_notebook(cells=[new_code_cell(SETUP), new_code_cell(TRAIN.format(lr=lr))]),
                       subs / name / "lab7b.ipynb")
    temp = tmp_path / "tmp"
    temp.mkdir()
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "grader", "grade", str(subs), "--out", str(out), "-j", "2", "--data-dir",
           str(synthetic_data), "--train-cache", str(tmp_path / "memo"), "--cell-timeout", "300", "--timeout", "600"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(temp)}, cwd=ROOT)
    try:
        def training() -> bool:
            return any("training " in log.read_text(errors="replace") for log in temp.glob("labgrader-train-*/service-0.log"))
        assert soon(training, 240), "the service never started training"
        pid = _worker_of(proc.pid)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    line = next(ln for ln in err.splitlines() if "the training service's process" in ln)
    assert "was killed by SIGKILL" in line and "starting it again (once)" in line, err
    assert "Traceback" not in err
    results = json.loads((out / "results.json").read_text())
    assert {s["student"]: s["status"] for s in results["students"]} == {"s1": "graded", "s2": "graded"}
    service = results["train_service"]
    assert (service["failures"], service["restarts"]) == (1, 1)
    print(f"service after the kill: {service}")
    told = []
    for student in ("s1", "s2"):
        nb = nbformat.read(out / "executed" / f"{student}.ipynb", as_version=4)
        told.append("killed by SIGKILL" in "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
                                                   if o.get("name") == "stderr"))
    assert any(told), "no notebook was told why its run trained in the sandbox"


@pytest.mark.sandbox
def test_a_service_that_cannot_start_leaves_the_class_to_train_in_the_sandboxes(synthetic_data, tmp_path, capfd):
    from grader_fixtures import grade_json

    subs = tmp_path / "class"
    (subs / "s1").mkdir(parents=True)
    nbformat.write(new_notebook(cells=[new_code_cell(SETUP), new_code_cell(TRAIN.format(lr=0.1).replace("n_epochs=6",
                                                                                                         "n_epochs=1"))]),
                   subs / "s1" / "lab7b.ipynb")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, summary = grade_json(str(subs), "--out", str(tmp_path / "out"), "--data-dir", str(synthetic_data),
                               "--train-cache", str(blocker / "memo"), "--cell-timeout", "300")
    err = capfd.readouterr().err
    assert code == 0, err
    assert summary["students"][0]["status"] == "graded"
    line = next(ln for ln in err.splitlines() if "the training service did not start" in ln)
    assert "every notebook trains in its sandbox" in line and "Traceback" not in err
    assert "train_service" not in json.loads((tmp_path / "out" / "results.json").read_text())


def test_the_service_process_maps_the_decoded_cache_and_computes_with_the_notebooks_environment(synthetic_data, tmp_path):
    """A run trained from the mapped cache is bit for bit the run trained from the gzip files, and the process
    starts with the thread variables a notebook's kernel gets."""
    from reference import datacache

    folder, _ = datacache.prepare(synthetic_data, tmp_path / "decoded")
    answers, infos = {}, {}
    for source, cache in (("gzip files", None), ("decoded cache", str(folder))):
        svc = TrainingService(ServiceOptions(cache_dir=str(tmp_path / source), gather_s=0.1, threads=1, data_cache=cache),
                              synthetic_data).start()
        try:
            environ = Path(f"/proc/{svc.batcher.child.proc.pid}/environ").read_bytes().split(b"\0")
            fut, how, _ = svc.batcher.submit(request(synthetic_data, lr=0.05, epochs=1), Waiter())
            answers[source], infos[source] = fut.result(timeout=120), svc.summary()
        finally:
            svc.close()
        assert b"OMP_NUM_THREADS=1" in environ and b"MALLOC_ARENA_MAX=2" in environ
        assert how == "trained" and infos[source]["data_from"] == source
    a, b = answers["gzip files"], answers["decoded cache"]
    assert a.history == b.history
    assert all(np.array_equal(x, y) for x, y in zip((*a.params, *a.momenta, a.rng), (*b.params, *b.momenta, b.rng)))


def test_a_cache_that_does_not_open_leaves_the_service_decoding_the_gzip_files(synthetic_data, tmp_path):
    svc = TrainingService(ServiceOptions(cache_dir=str(tmp_path / "memo"), threads=1,
                                         data_cache=str(tmp_path / "no-such-cache")), synthetic_data).start()
    try:
        assert svc.summary()["data_from"] == "gzip files"
        assert "data from its gzip files" in svc.describe()
    finally:
        svc.close()


SERVE_WITHOUT_TORCH = """
import json, socket, sys
from pathlib import Path
from grader.service.server import Quota, ServiceOptions, TrainingService
from reference import wire

memo, data_dir, frame = sys.argv[1:4]
svc = TrainingService(ServiceOptions(cache_dir=memo, threads=1, gather_s=0.1), data_dir).start()
with svc.session("s", Quota(runs=2, epochs=20)) as path, socket.socket(socket.AF_UNIX) as s:
    s.connect(str(path))
    s.sendall(Path(frame).read_bytes())
    header, tensors = wire.read_frame(wire.socket_reader(s), max_payload=1 << 24, arrays=True)
svc.close()
print(header if not header.get("ok") else "", file=sys.stderr)
print(json.dumps({"ok": header.get("ok"), "served": header.get("served"), "w1": list(tensors["w1"].shape) if "w1" in tensors else None,
                  "torch": "torch" in sys.modules}))
"""


def test_the_graders_side_of_the_service_answers_without_importing_torch(synthetic_data, tmp_path):
    """Sessions, quotas and the frames to and from the service's process use numpy only: torch's import
    (seconds of CPU while the first kernels start) and its teardown stay out of the grader."""
    from reference import wire

    frame = tmp_path / "request.lgts"
    req = request(synthetic_data, lr=0.05, epochs=1)
    frame.write_bytes(wire.encode(*trainrequest.build(data=req.data, lr=req.lr, momentum=req.momentum,
                                                      batch_size=req.batch_size, epochs=1, params=req.params, rng=req.rng)))
    run = subprocess.run([sys.executable, "-c", SERVE_WITHOUT_TORCH, str(tmp_path / "memo"), str(synthetic_data), str(frame)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout) == {"ok": True, "served": "trained", "w1": [512, 784], "torch": False}, run.stderr[-500:]

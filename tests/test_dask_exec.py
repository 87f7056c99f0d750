"""`grade --executor dask` on a two-process Dask cluster over loopback, notebooks in the real sandbox:
the same gradebook as a local run, a killed worker's submission graded on retry, and one-line errors."""

import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import distributed
import nbformat
import pytest
from distributed.client import FutureCancelledError
from nbformat.v4 import new_code_cell, new_notebook

from grader.cli import main
from grader_fixtures import grade_json as grade

pytestmark = pytest.mark.sandbox

FAST = ["--cell-timeout", "60", "--timeout", "120"]
WRITE_BOTH = ('import json\n'
              'json.dump({"a": "0.1", "b": "no", "c": 32, "d": "more updates"}, open("7b_ex1.json", "w"))\n'
              'json.dump(json.load(open("helper/ex2.json")), open("7b_ex2.json", "w"))')
TRAIN_ONCE = ('(x_train, y_train), (x_test, y_test) = fmnist_utils.get_data()\n'
              'model = build_mlp(784, 10)\n'
              'H = train(loss=torch.nn.CrossEntropyLoss(), model=model, x_train=x_train, y_train=y_train, x_test=x_test,\n'
              '          y_test=y_test, optim=optim.SGD(model.parameters(), lr=0.1, momentum=0.9), batch_size=128, n_epochs=1)\n'
              'print(round(H["acc"][-1], 4))')
EX2 = {"a": "0.03", "b": 64, "c": "yes, noise regularizes", "d": "a random perturbation"}


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as c:
        yield c


@pytest.fixture(scope="module")
def data_dir(synthetic_data) -> Path:
    return synthetic_data


def write_notebook(path: Path, *sources: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=[new_code_cell(s) for s in sources]), path)


@pytest.fixture
def small_class(tmp_path) -> Path:
    """A folder notebook that reads a file shipped beside it, a lone notebook that crashes, a silent one."""
    subs = tmp_path / "class"
    write_notebook(subs / "ada" / "lab7b.ipynb", "x = 1", TRAIN_ONCE, WRITE_BOTH)
    (subs / "ada" / "helper").mkdir()
    (subs / "ada" / "helper" / "ex2.json").write_text(json.dumps(EX2))
    os.symlink("helper/ex2.json", subs / "ada" / "link.json")
    write_notebook(subs / "cho.ipynb", "print('hello')", "{}['missing']")
    write_notebook(subs / "dev" / "lab7b.ipynb", "print('nothing written')")
    (subs / "dev" / "7b_ex1.json").write_text(json.dumps({"a": "0.1"}))
    return subs


def students(out: Path) -> dict:
    """Each student's result without what depends on the moment: times, and how the service served a run
    (trained, or from the memo the first grading filled)."""
    doc = json.loads((out / "results.json").read_text())
    out = {}
    for r in doc["students"]:
        kept = {k: v for k, v in r.items() if k not in ("duration_s", "timing")}
        kept["runs"] = [{k: v for k, v in run.items() if k != "served"} for run in r.get("runs") or []]
        out[r["student"]] = kept
    return out


def outputs(path: Path) -> list:
    """Each cell's source and outputs; stderr aside, where the kit says whether a run was trained or remembered."""
    nb = nbformat.read(path, as_version=4)
    return [(c.source, [{k: o.get(k) for k in ("output_type", "name", "text", "ename", "evalue")}
                        for o in c.get("outputs", []) if o.get("name") != "stderr"]) for c in nb.cells]


def test_dask_grades_exactly_as_the_local_pool_and_a_local_rerun_reuses_it(cluster, small_class, data_dir, tmp_path):
    common = ["--data-dir", str(data_dir), *FAST]
    local, remote = tmp_path / "local", tmp_path / "dask"
    assert grade(str(small_class), "--out", str(local), "-j", "2", *common)[0] == 0
    code, summary = grade(str(small_class), "--out", str(remote), "--executor", "dask",
                          "--scheduler", cluster.scheduler_address, *common)
    assert code == 0 and summary["graded_now"] == 3

    got, want = students(remote), students(local)
    assert got == want
    assert {s: r["status"] for s, r in got.items()} == {"ada": "graded", "cho": "error", "dev": "no-answers"}
    assert got["ada"]["reason"] == "all answer files valid" and "KeyError" in got["cho"]["reason"]
    assert sorted(p.name for p in (remote / "executed").iterdir()) == ["ada.ipynb", "cho.ipynb", "dev.ipynb"]
    for name in ("ada", "cho", "dev"):
        assert outputs(remote / "executed" / f"{name}.ipynb") == outputs(local / "executed" / f"{name}.ipynb")
    assert "(decoded cache)" in (remote / "executed" / "ada.ipynb").read_text(), "the worker bound its data cache"
    doc = json.loads((remote / "results.json").read_text())
    assert doc["options"]["executor"] == "dask"
    assert doc["train_service"]["from_memo"] + doc["train_service"]["trained"] == 1
    assert_slots_released()

    code, rerun = grade(str(small_class), "--out", str(remote), *common)
    assert code == 0 and rerun["graded_now"] == 0 and rerun["reused"] == 3


def assert_slots_released() -> None:
    """The workers held sandbox slots 0 and 1 while grading; the run's end gave them back."""
    from grader.grading.dask_exec import claim_slots

    claims = claim_slots(2)
    try:
        assert [slot for slot, _ in claims] == [0, 1]
    finally:
        for _, fd in claims:
            os.close(fd)


def executing_on(client, student: str) -> str | None:
    """The address of the worker now running `student`'s task, if one is."""
    keys = client.run(lambda dask_worker: [str(ts.key) for ts in dask_worker.state.executing])
    return next((addr for addr, running in keys.items() if any(student in k for k in running)), None)


def test_a_killed_worker_s_submission_is_retried_and_the_others_are_unaffected(cluster, small_class, data_dir, tmp_path):
    write_notebook(small_class / "slowpoke" / "lab7b.ipynb", WRITE_BOTH.replace("helper/ex2.json", "ex2.json"),
                   "import time\ntime.sleep(3)")
    (small_class / "slowpoke" / "ex2.json").write_text(json.dumps(EX2))
    killed: list[int] = []

    def kill_slowpoke_worker():
        with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                addr = executing_on(client, "slowpoke")
                if addr:
                    time.sleep(1.0)  # well into the notebook, and the client has fetched earlier results
                    if executing_on(client, "slowpoke") == addr:
                        pid = client.run(os.getpid, workers=[addr])[addr]
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                        return
                time.sleep(0.05)

    killer = threading.Thread(target=kill_slowpoke_worker)
    killer.start()
    try:
        code, summary = grade(str(small_class), "--out", str(tmp_path / "out"), "--executor", "dask",
                              "--scheduler", cluster.scheduler_address, "--data-dir", str(data_dir), *FAST)
    finally:
        killer.join()
    assert killed, "the slow submission was never seen running"
    assert code == 0
    got = {s["student"]: (s["status"], s["reason"]) for s in summary["students"]}
    assert got["slowpoke"] == ("graded", "all answer files valid")
    assert got["ada"] == ("graded", "all answer files valid")
    assert got["cho"][0] == "error" and got["dev"][0] == "no-answers"
    assert (tmp_path / "out" / ".state" / "slowpoke.json").is_file()
    assert (tmp_path / "out" / "executed" / "slowpoke.ipynb").is_file()
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        assert killed[0] not in client.run(os.getpid).values()


def test_an_unreachable_scheduler_is_a_one_line_error_before_any_grading(small_class, tmp_path, capsys, monkeypatch):
    import grader.grading.dask_exec

    monkeypatch.setattr(grader.grading.dask_exec, "CONNECT_TIMEOUT_S", 1.0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    address = f"tcp://127.0.0.1:{port}"
    code = main(["grade", str(small_class), "--out", str(out), "--executor", "dask", "--scheduler", address, "--no-execute"])
    err = capsys.readouterr().err
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"labgrader: cannot reach the Dask scheduler at {address}")
    assert "Traceback" not in err
    assert not (out / "results.json").exists() and not (out / ".state").exists()


def test_executor_flags_are_checked_together(small_class, tmp_path, capsys):
    assert main(["grade", str(small_class), "--out", str(tmp_path / "o"), "--executor", "dask"]) == 2
    assert capsys.readouterr().err.strip() == ("labgrader: --executor dask needs --scheduler ADDRESS "
                                               "(the Dask scheduler, e.g. tcp://HOST:8786)")
    with pytest.raises(SystemExit) as exit:
        main(["grade", str(small_class), "--scheduler", "tcp://127.0.0.1:8786"])
    assert exit.value.code == 2
    assert "--scheduler is only used with --executor dask" in capsys.readouterr().err


def test_without_dask_installed_it_says_how_to_install_it(small_class, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    code = main(["grade", str(small_class), "--out", str(tmp_path / "o"), "--executor", "dask",
                 "--scheduler", "tcp://127.0.0.1:8786", "--no-execute"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "labgrader: --executor dask needs Dask distributed, which is not installed: pip install 'labgrader[dask]'")


def test_a_packed_folder_holds_what_a_local_run_would_copy(tmp_path):
    from grader.grading.dask_exec import pack_submission, unpack_submission

    sub = tmp_path / "alice"
    (sub / "nested" / "deeper").mkdir(parents=True)
    (sub / "lab7b.ipynb").write_text("{}")
    (sub / "nested" / "deeper" / "w.bin").write_bytes(bytes(range(256)))
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink("nested/deeper/w.bin", sub / "inside-link")
    os.symlink(tmp_path / "secret.txt", sub / "outside-link")
    os.symlink(tmp_path, sub / "dir-link")
    os.link(sub / "lab7b.ipynb", sub / "nested" / "hard.ipynb")
    packed = pack_submission(sub)
    assert packed["kind"] == "folder"
    got = unpack_submission(packed, tmp_path / "unpacked")
    files = sorted(p.relative_to(got).as_posix() for p in got.rglob("*"))
    assert files == ["inside-link", "lab7b.ipynb", "nested", "nested/deeper", "nested/deeper/w.bin", "nested/hard.ipynb"]
    assert (got / "nested" / "hard.ipynb").read_text() == "{}"
    assert (got / "inside-link").read_bytes() == bytes(range(256)) and not (got / "inside-link").is_symlink()
    lone = unpack_submission(pack_submission(sub / "lab7b.ipynb"), tmp_path / "lone")
    assert lone.name == "lab7b.ipynb" and lone.read_text() == "{}"


class Finished:
    """A Dask future as _collect sees it: its result, or the exception it raises."""

    def __init__(self, outcome):
        self.outcome = outcome

    def result(self):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


def context(out: Path):
    from grader.grading.pipeline import Context
    from grader.execution.limits import Limits
    from grader_fixtures import reference_object
    from reference.spec import load_spec

    return Context(spec=load_spec(), ref=reference_object(), out=out, limits=Limits(), data_dir=None, sandbox=True,
                   no_execute=False, hide=False, threads=1)


@pytest.mark.parametrize("error, reason", [
    (distributed.KilledWorker(("run", "eve"), SimpleNamespace(address="tcp://10.0.0.9:4000"), 3),
     "its Dask worker died 4 times while grading it (last: tcp://10.0.0.9:4000); see the worker logs"),
    (FutureCancelledError(("run", "eve"), "scheduler-connection-lost", "second\nline"),
     "the Dask task failed: FutureCancelledError: ('run', 'eve') cancelled for reason: scheduler-connection-lost. second line"),
])
def test_a_lost_or_cancelled_task_is_that_student_s_unfinished_error(error, reason, tmp_path):
    from grader.grading.dask_exec import _collect
    from grader.grading.submissions import Submission

    stale = tmp_path / "executed" / "eve.ipynb"
    stale.parent.mkdir()
    stale.write_text("{}")
    result, finished = _collect(Finished(error), Submission("eve", tmp_path / "eve.ipynb"), "a" * 64, time.monotonic(),
                                context(tmp_path), distributed)
    assert finished is False
    assert (result["status"], result["reason"], result["total"], result["executed"]) == ("error", reason, 0, None)
    assert not stale.exists()


def test_a_setup_error_on_a_worker_stops_the_run_with_its_line(tmp_path):
    from grader.grading.dask_exec import _collect
    from grader.grading.pipeline import SetupError
    from grader.grading.submissions import Submission

    outcome = {"kind": "setup", "reason": "Dask worker tcp://10.0.0.9:4000: bwrap is missing", "exit_code": 2}
    with pytest.raises(SetupError, match="^Dask worker tcp://10.0.0.9:4000: bwrap is missing$"):
        _collect(Finished(outcome), Submission("eve", tmp_path / "eve.ipynb"), "a" * 64, time.monotonic(),
                 context(tmp_path), distributed)


def test_the_workers_service_summaries_add_up_with_their_process_failures():
    """What results.json's train_service says under Dask: counts summed, the fewest threads and trainers any
    worker had, and the services' process failures and restarts counted like a local run's."""
    import jsonschema

    from grader.grading.dask_exec import _service_summary

    def worker(trained, threads, trainers, failures, restarts):
        return {"device": "cpu", "threads": threads, "trainers": trainers, "data": "synthetic",
                "data_from": "decoded cache", "memo_dir": "/memo", "from_memo": 3, "joined": 1, "trained": trained,
                "batches": 0, "largest_batch": 2, "abandoned": 0, "refused": 0, "process": True,
                "failures": failures, "restarts": restarts}

    client = SimpleNamespace(run=lambda *a: {"w1": worker(2, 2, 2, 1, 1), "w2": worker(5, 1, 1, 0, 0), "w3": None})
    lines = []
    total = _service_summary(client, "plugin", lines.append)
    assert (total["trained"], total["from_memo"], total["threads"], total["trainers"]) == (7, 6, 1, 1)
    assert (total["process"], total["failures"], total["restarts"], total["data_from"]) == (True, 1, 1, "decoded cache")
    schema = json.loads((Path(__file__).parents[1] / "grader" / "schemas" / "results.schema.json").read_text())
    jsonschema.validate(total, schema["properties"]["train_service"])
    assert lines == ["training services on 2 Dask worker(s): 7 run(s) trained, 6 answered from the memo, 2 joined, 0 refused"]

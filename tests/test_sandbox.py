"""The sandbox holds: hostile notebooks end with the right status and touch nothing outside.

Every test runs a real notebook in bubblewrap (about 2 s each), with short limits so that a
limit that fails shows up as a failed test rather than a stuck or sunk machine.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import nbformat
import pytest
from conftest import world_readable

from grader.execution import sandbox
from grader.common.errors import UserError
from grader.execution.execute import ExecResult, execute_notebook, prepare_workdir
from grader.execution.limits import Limits

pytestmark = pytest.mark.sandbox

SLOT = 37
FLOOD_SLOT = 38
ANSWERS = ["7b_ex1.json", "7b_ex2.json"]
FAST = Limits(timeout=60, cell_timeout=8, memory_mb=1536, processes=64, file_size_mb=64, output_kb=64, cpu_seconds=60)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Small synthetic Fashion-MNIST, made world-readable as the sandbox's uid needs."""
    from reference.synth import write_synthetic

    return world_readable(write_synthetic(tmp_path_factory.mktemp("fmnist-sandbox"), n_train=1000, n_test=200, seed=0))


def notebook(*sources: str):
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])


def submit(tmp_path: Path, content, name: str = "lab.ipynb", extra: dict | None = None) -> Path:
    """A submission folder holding one notebook (a NotebookNode, or raw bytes/text as given)."""
    folder = tmp_path / "submission"
    folder.mkdir()
    path = folder / name
    if isinstance(content, (bytes, str)):
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    else:
        nbformat.write(content, path)
    for rel, text in (extra or {}).items():
        (folder / rel).write_text(text)
    return folder


def run(tmp_path: Path, content, *, limits: Limits = FAST, preamble=(), data_dir=None, slot: int = SLOT,
        sandboxed: bool = True, extra: dict | None = None, data_cache=None, font_cache=None) -> tuple[ExecResult, Path]:
    workdir = tmp_path / "work"
    nb = prepare_workdir(submit(tmp_path, content, extra=extra), workdir, answer_files=ANSWERS)
    result = execute_notebook(nb, workdir, limits=limits, data_dir=data_dir, preamble=list(preamble),
                              sandbox=sandboxed, slot=slot, seed=0, threads=1, data_cache=data_cache, font_cache=font_cache)
    assert result.status in ("ok", "error", "timeout", "memory", "died")
    assert "\n" not in result.reason and "Traceback" not in result.reason
    return result, workdir


def executed_text(result: ExecResult) -> str:
    nb = nbformat.read(result.executed, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def uid_processes(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as f:
                    line = next(ln for ln in f if ln.startswith("Uid:"))
            except (OSError, StopIteration):
                continue
            if int(line.split()[1]) == uid:
                pids.append(int(entry))
    return pids


def probe_json(result: ExecResult, workdir: Path, name: str = "probe.json") -> dict:
    assert result.status == "ok", result.reason
    return json.loads((workdir / name).read_text())


# outcomes ------------------------------------------------------------------------------------------

def test_normal_notebook_writes_answers_and_stale_ones_are_set_aside(tmp_path):
    nb = notebook("import json, os", "json.dump({'a': '0.1', 'uid': os.getuid()}, open('7b_ex1.json', 'w'))")
    result, workdir = run(tmp_path, nb, extra={"7b_ex1.json": '{"a": "stale"}'})
    assert result.status == "ok", result.reason
    written = json.loads((workdir / "7b_ex1.json").read_text())
    assert written["a"] == "0.1"
    if sandbox.privileged():
        assert written["uid"] == sandbox.uid_for_slot(SLOT)
    assert json.loads((workdir / "submitted-answers" / "7b_ex1.json").read_text()) == {"a": "stale"}
    executed = nbformat.read(result.executed, as_version=4)
    assert "labgrader-preamble" in executed.cells[1].metadata["tags"]
    assert result.duration_s > 0


def test_infinite_loop_times_out_and_names_the_cell(tmp_path):
    limits = Limits(**{**FAST.as_dict(), "cell_timeout": 3})
    result, _ = run(tmp_path, notebook("x = 1", "while True:\n    pass"), limits=limits)
    assert (result.status, result.cell) == ("timeout", 2)
    assert "cell 2" in result.reason and "3 s" in result.reason


def test_the_setup_cell_is_not_held_to_the_students_per_cell_limit(tmp_path):
    """Importing torch in the setup cell can take longer than a short --cell-timeout on a cold disk."""
    limits = Limits(**{**FAST.as_dict(), "cell_timeout": 2})
    slow_setup = ["import time", "time.sleep(3)"]
    (tmp_path / "setup").mkdir()
    (tmp_path / "student").mkdir()
    result, _ = run(tmp_path / "setup", notebook("x = 1"), limits=limits, preamble=slow_setup)
    assert result.status == "ok", result.reason
    result, _ = run(tmp_path / "student", notebook("import time\ntime.sleep(3)"), limits=limits)
    assert (result.status, result.cell) == ("timeout", 1), result.reason


def test_total_timeout_stops_the_notebook(tmp_path):
    limits = Limits(**{**FAST.as_dict(), "timeout": 8})
    result, _ = run(tmp_path, notebook(*["import time\ntime.sleep(1)"] * 12), limits=limits)
    assert result.status == "timeout" and "ran longer than its 8 s" in result.reason, result.reason
    assert result.cell is not None and 1 <= result.cell < 12


def test_host_kills_a_runner_past_the_deadline(tmp_path, monkeypatch):
    """The host's clock ends the whole sandbox at 8 s, long before the runner's own 30 s: 8 s leave a loaded
    machine time to start the kernel and reach cell 2."""
    import grader.execution.execute

    monkeypatch.setattr(grader.execution.execute, "HOST_GRACE_S", -22.0)
    limits = Limits(**{**FAST.as_dict(), "timeout": 30})
    result, _ = run(tmp_path, notebook("import os\nfor _ in range(3):\n    os.fork()", "while True:\n    pass"),
                    limits=limits)
    assert (result.status, result.cell) == ("timeout", 2), result.reason
    assert result.duration_s < 20
    assert uid_processes(sandbox.uid_for_slot(SLOT)) == []


def test_cpu_limit_ends_as_timeout(tmp_path):
    limits = Limits(**{**FAST.as_dict(), "cpu_seconds": 2})
    result, _ = run(tmp_path, notebook("while True:\n    pass"), limits=limits)
    assert (result.status, result.cell) == ("timeout", 1), result.reason
    assert "2 CPU seconds" in result.reason


def test_memory_bomb_ends_as_memory(tmp_path):
    bomb = ("chunks = []\n"
            "for _ in range(120):  # stops by itself at 12 GB if the limit fails\n"
            "    chunks.append(bytearray(100 * 2**20))\n"
            "print('allocated', len(chunks) * 100, 'MB')")
    limits = Limits(**{**FAST.as_dict(), "memory_mb": 1024})
    result, _ = run(tmp_path, notebook("x = 1", bomb), limits=limits)
    assert (result.status, result.cell) == ("memory", 2), result.reason


def test_process_flood_is_stopped_and_cleaned_up(tmp_path):
    flood = ("import os, time, json\n"
             "started, refused = 0, None\n"
             "for _ in range(3000):\n"
             "    try:\n"
             "        pid = os.fork()\n"
             "    except OSError as e:\n"
             "        refused = type(e).__name__\n"
             "        break\n"
             "    if pid == 0:\n"
             "        time.sleep(3)\n"
             "        os._exit(0)\n"
             "    started += 1\n"
             "json.dump({'started': started, 'refused': refused}, open('probe.json', 'w'))")
    uid = sandbox.uid_for_slot(FLOOD_SLOT)
    result, workdir = run(tmp_path, notebook(flood), slot=FLOOD_SLOT)
    probe = probe_json(result, workdir)
    assert probe["started"] < FAST.processes and probe["refused"] == "BlockingIOError", probe
    assert uid_processes(uid) == []


def test_huge_print_is_capped(tmp_path):
    nb = notebook("print('x' * 50_000_000)", "for i in range(200_000):\n    print(i)", "print('still here')")
    result, _ = run(tmp_path, nb)
    assert result.status == "ok", result.reason
    assert os.path.getsize(result.executed) < 8 * FAST.output_kb * 1024  # JSON lines roughly double the text
    text = executed_text(result)
    assert text.count("[output truncated by labgrader]") == 2
    assert "still here" in text


def test_kernel_exit_is_died(tmp_path):
    result, _ = run(tmp_path, notebook("print('hi')", "import os\nos._exit(1)", "print('never')"))
    assert (result.status, result.cell) == ("died", 2), result.reason
    assert "exit code 1" in result.reason


# isolation -----------------------------------------------------------------------------------------

def test_no_network_to_the_host(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    code = ("import socket, json\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
            "    outcome = 'connected'\n"
            "except OSError as e:\n"
            "    outcome = type(e).__name__\n"
            "json.dump({'outcome': outcome}, open('probe.json', 'w'))")
    try:
        result, workdir = run(tmp_path, notebook(code))
    finally:
        stop.set()
        thread.join()
        server.close()
    assert probe_json(result, workdir)["outcome"] == "ConnectionRefusedError"
    assert accepted == []


def test_files_outside_the_work_dir_are_invisible(tmp_path, monkeypatch):
    secret = tmp_path / "other-student" / "7b_ex1.json"
    secret.parent.mkdir()
    secret.write_text('{"a": "0.1"}')
    reference_dir = sandbox.package_dirs()["reference"]
    specs = reference_dir / "specs"
    assert any(specs.iterdir())
    monkeypatch.setattr(sandbox, "HIDDEN_IN_PACKAGES", {"reference": ("demo", "specs")})
    repo = reference_dir.parent
    paths = {"beside": str(secret), "root": "/root", "shadow": "/etc/shadow",
             "repo_root": str(repo), "submissions": str(repo / "submissions"), "tests": str(repo / "tests"),
             "demo": str(reference_dir / "demo"), "hidden_specs": str(specs), "kit": str(reference_dir / "kit.py")}
    code = ("import os, json\n"
            f"paths = {paths!r}\n"
            "seen = {}\n"
            "for key, p in paths.items():\n"
            "    try:\n"
            "        seen[key] = sorted(os.listdir(p)) if os.path.isdir(p) else len(open(p).read())\n"
            "    except OSError as e:\n"
            "        seen[key] = type(e).__name__\n"
            "json.dump(seen, open('probe.json', 'w'))")
    result, workdir = run(tmp_path, notebook(code))
    seen = probe_json(result, workdir)
    assert seen["beside"] == "FileNotFoundError"
    assert seen["shadow"] == "FileNotFoundError"
    assert seen["root"] == "FileNotFoundError" or set(seen["root"]) <= {".pyenv"}  # only a Python prefix
    assert seen["submissions"] == "FileNotFoundError" and seen["tests"] == "FileNotFoundError"
    assert seen["demo"] in ([], "FileNotFoundError")
    assert seen["hidden_specs"] == []
    assert isinstance(seen["kit"], int) and seen["kit"] > 0
    assert set(seen["repo_root"]) <= {".venv", "grader", "reference"}


def test_writes_outside_the_work_dir_fail(tmp_path, data_dir):
    outside = tmp_path / "outside.txt"
    targets = {"beside": str(outside), "package": str(sandbox.package_dirs()["grader"] / "planted.py"),
               "data": "/data/planted", "root": "/planted", "home": "/home/planted", "shm": "/dev/shm/planted",
               "python": str(Path(os.__file__).parent / "planted.py")}
    code = ("import json\n"
            f"targets = {targets!r}\n"
            "outcome = {}\n"
            "for key, p in targets.items():\n"
            "    try:\n"
            "        open(p, 'w').write('x')\n"
            "        outcome[key] = 'written'\n"
            "    except OSError as e:\n"
            "        outcome[key] = type(e).__name__\n"
            "open('/tmp/scratch', 'w').write('private tmp works')\n"
            "outcome['tmp'] = open('/tmp/scratch').read()\n"
            "json.dump(outcome, open('probe.json', 'w'))")
    result, workdir = run(tmp_path, notebook(code), data_dir=data_dir)
    outcome = probe_json(result, workdir)
    assert outcome.pop("tmp") == "private tmp works"
    assert "written" not in outcome.values(), outcome
    assert not outside.exists()
    assert not (sandbox.package_dirs()["grader"] / "planted.py").exists()
    assert not (Path(data_dir) / "planted").exists()


# notebook files ------------------------------------------------------------------------------------

def test_not_json_is_an_error_with_one_line(tmp_path):
    result, _ = run(tmp_path, "this is { not a notebook")
    assert result.status == "error" and result.cell is None
    assert "not JSON" in result.reason


@pytest.mark.parametrize("content, reason", [
    ("[]", "lab.ipynb is not a Jupyter notebook: it holds a list, not a notebook object"),
    ('{"cells": "print(1)"}', "lab.ipynb is not a Jupyter notebook: its cells are a string, not a list"),
    ('{"cells": {"0": "print(1)"}}', "lab.ipynb is not a Jupyter notebook: its cells are an object, not a list"),
    ('{"cells": [{"cell_type": "code", "source": ""}, 7]}', "lab.ipynb is not a Jupyter notebook: its cell 2 is a number, not a cell"),
])
def test_json_that_is_not_a_notebook_says_what_it_is_in_plain_words(tmp_path, content, reason):
    result, _ = run(tmp_path, content)
    assert result.status == "error" and result.cell is None
    assert result.reason.startswith(reason) and "attribute" not in result.reason


def test_empty_file_is_an_error(tmp_path):
    result, _ = run(tmp_path, b"")
    assert result.status == "error" and "empty" in result.reason


def test_nbformat_v3_notebook_runs(tmp_path):
    v4 = notebook("x = 6 * 7", "print('answer', x)")
    result, _ = run(tmp_path, nbformat.writes(v4, version=3))
    assert result.status == "ok", result.reason
    assert "answer 42" in executed_text(result)


def test_error_names_cell_and_exception(tmp_path):
    result, _ = run(tmp_path, notebook("a = 1", "", "1 / 0", "print('never')"))
    assert (result.status, result.cell) == ("error", 3)
    assert result.reason == "cell 3 «1 / 0»: ZeroDivisionError: division by zero"


def test_kit_through_the_preamble_trains_an_epoch(tmp_path, data_dir):
    code = ("(x_train, y_train), (x_test, y_test) = fmnist_utils.get_data()\n"
            "model = build_mlp(784, 10, 32)\n"
            "H = train(torch.nn.CrossEntropyLoss(), model, x_train, y_train, x_test, y_test,\n"
            "          optim.SGD(model.parameters(), lr=0.1, momentum=0.9), 128, 1)\n"
            "import json, os, sys\n"
            "json.dump({'H': H, 'data': os.environ['LABGRADER_DATA'], 'n': len(x_train),\n"
            "           'dynamo': type(sys.modules.get('torch._dynamo')).__name__}, open('probe.json', 'w'))")
    preamble = ["from src import fmnist_utils", "from src.fmnist_utils import *"]
    limits = Limits(**{**FAST.as_dict(), "memory_mb": 4096, "cell_timeout": 60})
    result, workdir = run(tmp_path, notebook(code), limits=limits, preamble=preamble, data_dir=data_dir)
    probe = probe_json(result, workdir)
    assert probe["data"] == "/data" and probe["n"] == 1000
    assert len(probe["H"]["acc"]) == 1 and 0.0 < probe["H"]["test_acc"][0] <= 1.0
    assert probe["dynamo"] == "StandIn"  # the kernel's startup file: torch.optim did not import dynamo


DATA_PROBE = (
    "import hashlib, json, os\n"
    "import matplotlib.font_manager as fm\n"
    "(x, y), (xt, yt) = fmnist_utils.get_data()\n"
    "out = {'data': [[str(t.dtype), list(t.shape), hashlib.sha256(t.numpy().tobytes()).hexdigest()] for t in (x, y, xt, yt)],\n"
    "       'cache': os.environ.get('LABGRADER_DECODED_DATA'), 'fonts': fm.fontManager.__dict__.get('labgrader_probe')}\n"
    "first = x[0].clone()\n"
    "x[0] = 5\n"
    "(again, _), _ = fmnist_utils.get_data()\n"
    "out['private_edit'] = bool((again[0] == first).all()) and float(x[0, 0]) == 5.0\n"
    "if out['cache'] == '/data-decoded':\n"
    "    for key, how in (('edit', lambda: open(os.path.join(out['cache'], 'x_train.f4'), 'r+b').write(b'x')),\n"
    "                     ('plant', lambda: open(os.path.join(out['cache'], 'planted'), 'w'))):\n"
    "        try:\n"
    "            how()\n"
    "            out[key] = 'written'\n"
    "        except OSError as e:\n"
    "            out[key] = type(e).__name__\n"
    "json.dump(out, open('probe.json', 'w'))")


def test_get_data_maps_the_bound_cache_read_only_and_equals_decoding(tmp_path, data_dir):
    """The same tensors with the grader's decoded cache as without; the mount refuses writes; in-place
    edits stay in the notebook; the seeded font list is the one matplotlib loads."""
    from grader.execution import fontcache
    from reference import datacache

    cache, _ = datacache.prepare(data_dir, tmp_path / "cache")
    fonts, _ = fontcache.prepare(tmp_path / "cache")
    listing = next(fonts.glob("fontlist-*.json"))
    listing.write_text(json.dumps({**json.loads(listing.read_text()), "labgrader_probe": "seeded"}))
    preamble = ["from src import fmnist_utils", "from src.fmnist_utils import *"]
    limits = Limits(**{**FAST.as_dict(), "memory_mb": 4096, "cell_timeout": 60})
    probes = {}
    for name, kwargs in {"cached": {"data_cache": cache, "font_cache": fonts}, "plain": {},
                         "unsandboxed": {"data_cache": cache, "sandboxed": False}}.items():
        (tmp_path / name).mkdir()
        result, workdir = run(tmp_path / name, notebook(DATA_PROBE), limits=limits, preamble=preamble,
                              data_dir=data_dir, **kwargs)
        probes[name] = probe_json(result, workdir)
        probes[name]["log"] = executed_text(result)
    cached, plain, unsandboxed = probes["cached"], probes["plain"], probes["unsandboxed"]
    assert cached["data"] == plain["data"] == unsandboxed["data"]
    assert [d[:2] for d in cached["data"]] == [["torch.float32", [1000, 784]], ["torch.int64", [1000]],
                                                ["torch.float32", [200, 784]], ["torch.int64", [200]]]
    assert cached["cache"] == str(sandbox.DATACACHE) and plain["cache"] is None
    assert unsandboxed["cache"] == str(cache.resolve())
    assert "(decoded cache)" in cached["log"] and "(decoded cache)" not in plain["log"]
    assert cached["edit"] in ("OSError", "PermissionError") and cached["plant"] in ("OSError", "PermissionError")
    assert cached["private_edit"] and plain["private_edit"] and unsandboxed["private_edit"]
    assert (cached["fonts"], plain["fonts"]) == ("seeded", None)
    datacache.verify(cache)
    assert not (cache / "planted").exists()


def test_unreadable_data_dir_is_refused_with_one_line(tmp_path):
    private = tmp_path / "private-data"
    private.mkdir(mode=0o700)
    workdir = tmp_path / "work"
    nb = prepare_workdir(submit(tmp_path, notebook("1")), workdir, answer_files=ANSWERS)
    if not sandbox.privileged():  # the notebook keeps the caller's uid, which can read it
        assert execute_notebook(nb, workdir, limits=FAST, data_dir=private, preamble=[], slot=SLOT).status == "ok"
        return
    with pytest.raises(UserError, match="chmod -R a\\+rX"):
        execute_notebook(nb, workdir, limits=FAST, data_dir=private, preamble=[], sandbox=True, slot=SLOT)


# without bubblewrap --------------------------------------------------------------------------------

def test_no_sandbox_runs_the_same_runner(tmp_path):
    result, workdir = run(tmp_path, notebook("import json\njson.dump({'a': 1}, open('7b_ex1.json', 'w'))"),
                          sandboxed=False)
    assert result.status == "ok", result.reason
    assert json.loads((workdir / "7b_ex1.json").read_text()) == {"a": 1}


def test_missing_bwrap_refuses_with_one_line(tmp_path, monkeypatch):
    real_which = sandbox.shutil.which
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None if name == "bwrap" else real_which(name))
    sandbox.sandbox_problem.cache_clear()
    try:
        workdir = tmp_path / "work"
        nb = prepare_workdir(submit(tmp_path, notebook("1")), workdir, answer_files=ANSWERS)
        with pytest.raises(UserError, match="install it .* or pass --no-sandbox"):
            execute_notebook(nb, workdir, limits=FAST, data_dir=None, preamble=[], sandbox=True, slot=SLOT)
    finally:
        sandbox.sandbox_problem.cache_clear()


# the work dir --------------------------------------------------------------------------------------

def test_prepare_skips_links_out_and_needs_one_notebook(tmp_path):
    folder = submit(tmp_path, notebook("1"))
    (tmp_path / "secret.txt").write_text("host secret")
    (folder / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (folder / "data.csv").write_text("1,2\n")
    (folder / "alias.csv").symlink_to(folder / "data.csv")
    nb = prepare_workdir(folder, tmp_path / "work", answer_files=ANSWERS)
    assert nb.name == "lab.ipynb"
    assert not (tmp_path / "work" / "leak.txt").exists()
    assert (tmp_path / "work" / "alias.csv").read_text() == "1,2\n"
    assert (tmp_path / "work" / "src" / "fmnist_utils.py").is_file()

    nbformat.write(notebook("2"), folder / "copy.ipynb")
    with pytest.raises(UserError, match="2 notebooks .* submit exactly one"):
        prepare_workdir(folder, tmp_path / "work2", answer_files=ANSWERS)


def test_a_stop_request_ends_the_sandbox_at_once(tmp_path):
    """Ctrl-C in `grade`: the running notebooks are killed, not waited for."""
    import threading

    from grader.execution.execute import ExecutionStopped

    workdir = tmp_path / "work"
    nb = prepare_workdir(submit(tmp_path, notebook("while True:\n    pass")), workdir, answer_files=ANSWERS)
    stop = threading.Event()
    threading.Timer(3.0, stop.set).start()
    start = time.monotonic()
    with pytest.raises(ExecutionStopped):
        execute_notebook(nb, workdir, limits=FAST, data_dir=None, preamble=[], slot=SLOT, stop=stop)
    assert time.monotonic() - start < 8
    deadline = time.monotonic() + 10
    while uid_processes(sandbox.uid_for_slot(SLOT)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert uid_processes(sandbox.uid_for_slot(SLOT)) == []


def test_the_notebook_takes_the_hosts_kernel_path_and_thread_count_and_nothing_else(tmp_path, monkeypatch):
    """The variables that choose CPU kernels reach the notebook, so it computes as the training service
    on the host does; the thread count is the grader's; any other host variable stays outside."""
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.setenv("LABGRADER_SECRET_TOKEN", "s3cret")
    code = ("import json, os, torch\n"
            "env = {k: os.environ.get(k) for k in ('ATEN_CPU_CAPABILITY', 'MKL_ENABLE_INSTRUCTIONS', 'OMP_NUM_THREADS',\n"
            "                                      'LABGRADER_SECRET_TOKEN')}\n"
            "json.dump({'env': env, 'capability': torch.backends.cpu.get_cpu_capability(),\n"
            "           'threads': torch.get_num_threads()}, open('probe.json', 'w'))")
    limits = Limits(**{**FAST.as_dict(), "memory_mb": 4096, "cell_timeout": 60})
    probe = probe_json(*run(tmp_path, notebook(code), limits=limits))
    assert probe["env"] == {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                            "OMP_NUM_THREADS": "1", "LABGRADER_SECRET_TOKEN": None}
    assert probe["capability"] == "DEFAULT" and probe["threads"] == 1


def test_the_sandbox_environment_names_only_kernel_variables_the_host_set(monkeypatch):
    for name in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_CBWR", "")
    env = sandbox.runner_env(home="/home/student", data=None, threads=3, seed=0)
    assert not {"ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR"} & set(env)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert sandbox.runner_env(home="/home/student", data=None, threads=3, seed=0)["ATEN_CPU_CAPABILITY"] == "avx2"


def test_threads_per_notebook_share_the_cores_and_honour_omp_num_threads(monkeypatch):
    from grader.execution.limits import notebook_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert notebook_threads(4, {}) == 4 and notebook_threads(32, {}) == 1
    assert notebook_threads(4, {"OMP_NUM_THREADS": "1"}) == 1
    assert notebook_threads(4, {"OMP_NUM_THREADS": "8"}) == 4
    assert notebook_threads(4, {"OMP_NUM_THREADS": "zero"}) == notebook_threads(4, {"OMP_NUM_THREADS": "0"}) == 4


def test_the_execution_says_where_its_time_went(tmp_path):
    result, _ = run(tmp_path, notebook("import time\ntime.sleep(0.6)", "x = 1"))
    assert result.status == "ok", result.reason
    t = result.timing
    assert [n for n, _ in t["cells"]] == [1, 2]
    assert t["cells"][0][1] >= 0.6 and t["student_cells_s"] >= 0.6
    assert t["sandbox_start_s"] > 0 and t["kernel_start_s"] > 0 and t["setup_cell_s"] > 0
    parts = t["sandbox_start_s"] + t["kernel_start_s"] + t["setup_cell_s"] + t["student_cells_s"] + t["after_last_cell_s"]
    assert parts <= result.duration_s + 0.01


def test_timestamps_from_the_sandbox_that_do_not_fit_the_execution_are_dropped():
    from grader.execution.execute import stage_times

    start = 1000.0
    status = {"timing": {"runner": 999.0, "kernel": "soon", "end": 1004.0,
                         "cells": [[1, 0.5], [2, -1], ["3", 1.0], [True, 1.0], [4, 1e9], [0, 0.25], "x", [5, 0.1, 9]]}}
    t = stage_times(status, start, 5.0)
    assert "sandbox_start_s" not in t and "kernel_start_s" not in t
    assert t["cells"] == [[1, 0.5]] and t["setup_cell_s"] == 0.25 and t["after_last_cell_s"] == 1.0
    assert stage_times({"timing": [1, 2]}, start, 5.0) is None and stage_times(None, start, 5.0) is None

"""Limits per sandbox, not per process: the memory of all its processes, no nested user namespaces,
the disk cap of the work dir, and work dirs removed after grading. Memory figures are measured here,
from outside the sandbox, by sampling the RSS of every process of the slot's uid."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from grader.execution import cgroup, sandbox, watchdog
from grader.execution.execute import execute_notebook, prepare_workdir, remove_workdir
from grader.execution.limits import Limits
from grader_fixtures import grade_json as grade

pytestmark = pytest.mark.sandbox

SLOT = 41
FAST = Limits(timeout=60, cell_timeout=20, memory_mb=1536, processes=64, file_size_mb=64, output_kb=64, cpu_seconds=60)
MB = 1 << 20


def notebook(*sources: str):
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])


def run(tmp_path: Path, nb, limits: Limits = FAST):
    folder = tmp_path / "submission"
    folder.mkdir()
    nbformat.write(nb, folder / "lab.ipynb")
    workdir = tmp_path / "work"
    path = prepare_workdir(folder, workdir, answer_files=[])
    return execute_notebook(path, workdir, limits=limits, data_dir=None, preamble=[], sandbox=True, slot=SLOT,
                            threads=1), workdir


def uid_procs(uid: int) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == uid]


SAMPLER = """
import os, sys, time
uid, out = int(sys.argv[1]), sys.argv[2]
peak = {"rss": 0, "pss": 0, "anon": 0, "samples": 0}
def kb(text, key):
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0
while not os.path.exists(out + ".stop"):
    total = {"rss": 0, "pss": 0, "anon": 0}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/status") as f:
                    status = f.read()
                if int(status.split("Uid:")[1].split()[0]) != uid:
                    continue
                with open(f"/proc/{name}/smaps_rollup") as f:
                    rollup = f.read()
            except (OSError, IndexError):
                continue
            total["rss"] += kb(status, "VmRSS")
            total["anon"] += kb(status, "RssAnon") + kb(status, "RssShmem")
            total["pss"] += kb(rollup, "Pss")
    for k, v in total.items():
        peak[k] = max(peak[k], v)
    peak["samples"] += 1
    time.sleep(0.002)
open(out, "w").write(repr(peak))
"""


class Sampler:
    """The sandbox's memory measured from another process every few ms while the notebook runs:
    summed RSS, summed anonymous RSS and summed proportional set size (PSS: a page shared by n
    processes counts 1/n) of the slot uid's processes (all of the sandbox but bwrap's two)."""

    def __init__(self, uid: int, tmp_path: Path):
        self.uid, self.out = uid, tmp_path / "sampled"
        self.peak: dict = {}

    def __enter__(self):
        import subprocess
        import sys

        self.proc = subprocess.Popen([sys.executable, "-c", SAMPLER, str(self.uid), str(self.out)])
        return self

    def __exit__(self, *exc):
        import ast

        Path(f"{self.out}.stop").touch()
        self.proc.wait(timeout=30)
        self.peak = ast.literal_eval(self.out.read_text())


FOUR_CHILDREN = '''import subprocess, sys
touch = """
import time
b = bytearray(700 * 2**20)
for i in range(0, len(b), 4096):
    b[i] = 1
time.sleep(20)
"""
children = [subprocess.Popen([sys.executable, "-c", touch]) for _ in range(4)]
print([c.wait() for c in children])'''


def test_four_children_of_700_mb_under_memory_1024_end_in_memory_below_the_limit_summed(tmp_path):
    uid = sandbox.uid_for_slot(SLOT)
    limits = Limits(**{**FAST.as_dict(), "memory_mb": 1024})
    with Sampler(uid, tmp_path) as sampler:
        result, _ = run(tmp_path, notebook("x = 1", FOUR_CHILDREN), limits)
    p = sampler.peak
    print(f"sandbox peak, sampled from outside {p['samples']} times: summed RSS {p['rss'] / 1e9:.3f} GB, "
          f"summed anonymous RSS {p['anon'] / 1e9:.3f} GB, summed PSS {p['pss'] / 1e9:.3f} GB; "
          f"{result.status}: {result.reason}")
    assert (result.status, result.cell) == ("memory", 2), result.reason
    assert "together used more than 1024 MiB" in result.reason
    # "About 1.1 GB": the limit is 1024 MiB (1.074 GB); the watchdog samples every 10 ms and pauses the
    # tree before it decides, and four children touching pages at about 1 GB/s each add tens of MB
    # between two samples, more when a loaded machine runs the watchdog late (peaks measured 1.06 to
    # 1.13 GB). Summed RSS counts shared libraries once per process, hence its wider bound.
    assert 0.7e9 < p["pss"] < 1.15e9 and p["anon"] < 1.15e9 and p["rss"] < 1.25e9
    assert uid_procs(uid) == []


def test_a_tmpfs_file_counts_against_the_memory_of_the_sandbox(tmp_path):
    limits = Limits(**{**FAST.as_dict(), "memory_mb": 1024, "file_size_mb": 1024})
    fill = ("import os\n"
            "with open('/tmp/fill', 'wb') as f:\n"
            "    for _ in range(40):\n"
            "        f.write(b'x' * (25 * 2**20))\n"
            "        f.flush()\n"
            "import time; time.sleep(10)")
    result, _ = run(tmp_path, notebook(fill), limits)
    assert (result.status, result.cell) == ("memory", 1), result.reason


NAMESPACES = '''import ctypes, json, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
rc = libc.unshare(0x10000000)
probe = {"unshare_call": [rc, ctypes.get_errno()]}
done = subprocess.run(["unshare", "-Ur", "true"], capture_output=True, text=True)
probe["unshare_command"] = [done.returncode, done.stderr.strip()]
t = threading.Thread(target=lambda: probe.setdefault("thread", "ran"))
t.start(); t.join()
probe["subprocess"] = subprocess.run(["echo", "hi"], capture_output=True, text=True).stdout.strip()
json.dump(probe, open("probe.json", "w"))'''


def test_no_nested_user_namespace_inside_and_threads_still_start(tmp_path):
    result, workdir = run(tmp_path, notebook(NAMESPACES))
    assert result.status == "ok", result.reason
    probe = json.loads((workdir / "probe.json").read_text())
    assert probe["unshare_call"] == [-1, 1]  # EPERM
    assert probe["unshare_command"][0] != 0 and "Operation not permitted" in probe["unshare_command"][1]
    assert probe["thread"] == "ran" and probe["subprocess"] == "hi"


OTHER_PROCESSES = '''import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
probe = {"ptrace_runner": [libc.ptrace(16, 2, 0, 0), ctypes.get_errno()]}
probe["add_key"] = [libc.syscall(248, b"user", b"lab7b-share", b"answers", 7, ctypes.c_int(-4)), ctypes.get_errno()]
try:
    open("/proc/2/mem", "rb").read(1)
    probe["runner_mem"] = "read"
except OSError as e:
    probe["runner_mem"] = e.errno
json.dump(probe, open("probe.json", "w"))'''


def test_the_notebook_cannot_trace_the_runner_nor_leave_a_key_for_the_next_student(tmp_path):
    result, workdir = run(tmp_path, notebook(OTHER_PROCESSES))
    assert result.status == "ok", result.reason
    probe = json.loads((workdir / "probe.json").read_text())
    assert probe["ptrace_runner"] == [-1, 1] and probe["add_key"] == [-1, 1]  # EPERM
    assert probe["runner_mem"] in (1, 13)  # EPERM or EACCES: the runner is not dumpable


FORGER = '''import json, os, signal, time
state = "/home/student/.labgrader/"
if os.fork() == 0:
    os.setsid()
    if os.fork():
        os._exit(0)
    while True:
        try:
            status = json.load(open(state + "status.json"))
        except (OSError, ValueError):
            continue
        if status.get("phase") == "done":
            break
    os.kill(2, signal.SIGSTOP)
    status.update(status="ok", reason="forged", cell=None)
    open(state + "status.json", "w").write(json.dumps(status))
    os.kill(2, signal.SIGCONT)
    os._exit(0)
time.sleep(0.5)'''

KILLER = '''import json, os, signal
json.dump({"phase": "done", "status": "ok", "reason": "forged", "cell": None},
          open("/home/student/.labgrader/status.json", "w"))
os.kill(2, signal.SIGKILL)'''


def test_a_daemon_left_behind_cannot_rewrite_the_verdict(tmp_path):
    result, _ = run(tmp_path, notebook(FORGER, "raise RuntimeError('the real ending')"))
    assert (result.status, result.cell) == ("error", 2) and "the real ending" in result.reason


def test_a_status_written_by_the_notebook_before_it_kills_the_runner_is_not_trusted(tmp_path):
    result, _ = run(tmp_path, notebook(KILLER))
    assert result.status == "died" and result.reason != "forged", result.reason


@pytest.mark.parametrize("code, limit", [
    ("for i in range(40):\n    open(f'big{i}', 'wb').write(b'x' * 2**20)\nimport time; time.sleep(10)", "--disk"),
    ("import os\nos.mkdir('many')\nfor i in range(3000):\n    open(f'many/{i}', 'w').close()\nimport time; time.sleep(10)",
     "--disk-files"),
    ("import os\nheld = []\nfor i in range(40):\n    fd = os.open(f'gone{i}', os.O_CREAT | os.O_WRONLY)\n"
     "    os.unlink(f'gone{i}')\n    os.write(fd, b'x' * 2**20)\n    held.append(fd)\nimport time; time.sleep(10)", "--disk"),
])
def test_a_notebook_past_the_disk_cap_ends_in_error_and_leaves_no_work_dir(tmp_path, code, limit):
    class_dir = tmp_path / "class"
    (class_dir / "hog").mkdir(parents=True)
    nbformat.write(notebook("x = 1", code), class_dir / "hog" / "lab7b.ipynb")
    out = tmp_path / "out"
    status, summary = grade(str(class_dir), "--out", str(out), "--no-train-service", "--disk", "16",
                            "--disk-files", "1000", "--cell-timeout", "30", "--timeout", "60", "--memory", "2048")
    assert status == 0
    (hog,) = summary["students"]
    assert hog["status"] == "error" and "disk cap" in hog["reason"] and limit in hog["reason"], hog["reason"]
    assert "cell 2" in hog["reason"]
    assert not (out / ".work").exists() or list((out / ".work").iterdir()) == []


def test_keep_work_keeps_the_work_dir(tmp_path):
    class_dir = tmp_path / "class"
    (class_dir / "ada").mkdir(parents=True)
    nbformat.write(notebook("open('mine.txt', 'w').write('kept')"), class_dir / "ada" / "lab7b.ipynb")
    out = tmp_path / "out"
    status, summary = grade(str(class_dir), "--out", str(out), "--no-train-service", "--keep-work")
    assert status == 0 and (out / ".work" / "ada" / "mine.txt").read_text() == "kept"


# pieces, without a sandbox ---------------------------------------------------------------------

def test_disk_usage_counts_bytes_files_and_hard_links_once(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"x" * MB)
    os.link(tmp_path / "a" / "f", tmp_path / "g")
    (tmp_path / "h").symlink_to("/etc/passwd")
    used, files = watchdog.disk_usage(str(tmp_path))
    assert files == 4 and MB <= used < 2 * MB
    assert watchdog.disk_usage(str(tmp_path), stop_files=1)[1] == 2


def test_a_work_dir_deeper_than_the_recursion_limit_is_removed(tmp_path):
    fd = os.open(tmp_path, os.O_RDONLY)
    os.mkdir("w", dir_fd=fd)
    here = os.open("w", os.O_RDONLY, dir_fd=fd)
    os.close(fd)
    for _ in range(1500):
        os.mkdir("d", dir_fd=here)
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=here))
        child = os.open("d", os.O_RDONLY, dir_fd=here)
        os.close(here)
        here = child
    os.close(here)
    assert remove_workdir(tmp_path / "w") and not (tmp_path / "w").exists()


def _watched(tmp_path, code: str, **limits):
    """A plain Python child (no sandbox) under a Watchdog; -> (verdict, peak usage, exit code)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path)
    dog = watchdog.Watchdog(proc.pid, tmp_path, **{"memory_bytes": None, "processes": None,
                                                   "disk_bytes": 1 << 40, "disk_files": 1 << 30, **limits}).start()
    try:
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
    return dog.stop(), dog.peak, code


def test_the_watchdog_counts_threads_against_the_process_limit(tmp_path):
    verdict, peak, code = _watched(tmp_path, "import threading, time\n"
                                             "for _ in range(40):\n"
                                             "    threading.Thread(target=time.sleep, args=(20,), daemon=True).start()\n"
                                             "time.sleep(20)", processes=16)
    assert verdict.status == "error" and "more than 16 processes and threads" in verdict.reason and code == -9


def test_the_watchdog_counts_a_memfd_nobody_maps(tmp_path):
    verdict, peak, code = _watched(tmp_path, "import os, time\n"
                                             "fd = os.memfd_create('hoard')\n"
                                             "for _ in range(12):\n"
                                             "    os.write(fd, b'x' * (16 << 20))\n"
                                             "time.sleep(20)", memory_bytes=120 * MB)
    assert verdict.status == "memory" and code == -9 and peak.memory > 120 * MB


def test_pages_shared_by_forks_count_once(tmp_path):
    """Forked children share the parent's pages: summed RSS would pass the limit, the watchdog does not."""
    verdict, peak, code = _watched(tmp_path, "import os, time\n"
                                             "hoard = bytearray(60 << 20)\n"
                                             "hoard[::4096] = b'x' * len(range(0, 60 << 20, 4096))\n"
                                             "kids = [os.fork() for _ in range(3)]\n"
                                             "time.sleep(3)\n"
                                             "os._exit(0) if 0 in kids else [os.waitpid(k, 0) for k in kids if k]",
                                  memory_bytes=200 * MB)
    assert verdict is None and code == 0


def test_the_watchdog_samples_as_often_as_the_memory_left_requires():
    quiet, fast = watchdog.QUIET_EVERY_S, watchdog.MEMORY_EVERY_S
    assert watchdog.sample_every_s(None) == quiet
    assert watchdog.sample_every_s(4 << 30) == quiet
    assert watchdog.sample_every_s(1 << 20) == fast and watchdog.sample_every_s(-5) == fast
    between = int(watchdog.GROWTH_BYTES_PER_S * 0.1)
    assert watchdog.sample_every_s(between) == pytest.approx(0.1)


def _samples_in_one_second(tmp_path, headroom: int) -> int:
    """Samples a Watchdog takes in a second of a child holding 64 MB, its limit `headroom` bytes above the child's RSS."""
    import subprocess
    import sys
    import time

    code = ("import time\nhoard = bytearray(64 << 20)\nhoard[::4096] = b'x' * len(range(0, 64 << 20, 4096))\n"
            "print('held', flush=True)\ntime.sleep(30)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        limit = psutil.Process(proc.pid).memory_info().rss + headroom
        dog = watchdog.Watchdog(proc.pid, tmp_path, memory_bytes=limit, processes=None,
                                disk_bytes=1 << 40, disk_files=1 << 30).start()
        time.sleep(1.0)
        assert dog.stop() is None
        return dog.samples
    finally:
        proc.kill()
        proc.wait()


def test_far_below_its_limit_a_sandbox_is_sampled_a_few_times_a_second_and_near_it_every_10_ms(tmp_path):
    """A sample preempts the notebook's training threads (9% slower at a fixed 100 per second), so a
    sandbox far below its limit is sampled about 4 times a second; 5 MB below it, every 10 ms."""
    far = _samples_in_one_second(tmp_path, 4 << 30)
    near = _samples_in_one_second(tmp_path, 5 * MB)
    assert 2 <= far <= 8, far
    assert near >= 40, near


def test_the_tree_walk_finds_what_a_pass_over_proc_finds_children_of_threads_and_grandchildren_included(tmp_path):
    """The watchdog walks down each thread's children list (a fork from a live thread is listed under that thread),
    which costs the sandbox's processes only; it must see the same tree as a pass over every process."""
    import subprocess
    import sys

    code = ("import subprocess, sys, threading, time\n"
            "grand = 'import subprocess, time; subprocess.Popen([\"sleep\", \"30\"]); time.sleep(30)'\n"
            "kids = []\n"
            "def spawn():\n"
            "    kids.append(subprocess.Popen([sys.executable, '-c', grand]))\n"
            "    time.sleep(30)\n"
            "threading.Thread(target=spawn, daemon=True).start()\n"
            "while not kids:\n"
            "    time.sleep(0.01)\n"
            "kids.append(subprocess.Popen(['sleep', '30']))\n"
            "print('forked', flush=True)\ntime.sleep(30)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "forked"
        for _ in range(50):
            want = {proc.pid} | {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
            if len(want) == 4:
                break
            time.sleep(0.05)
        assert len(want) == 4, "the parent, its thread's child, that one's child and a plain child"
        walked, passed = watchdog._scan_tree(proc.pid), watchdog._scan_all(proc.pid)
        assert set(walked) == set(passed) == want
        assert next(iter(walked)) == proc.pid
        assert all(rss > 0 and threads >= 1 for rss, threads in walked.values())
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()


def test_this_host_has_no_delegated_cgroup_v2_subtree():
    """These machines mount cgroup v1 for their hosting: detection must say no (and writes nothing)."""
    assert cgroup.delegated() is None


def test_a_delegated_v2_subtree_is_detected_and_set_up_in_a_fake_tree(tmp_path):
    root = tmp_path / "cgroup"
    base = root / "system.slice" / "grader.service"
    base.mkdir(parents=True)
    (base / "cgroup.controllers").write_text("cpu memory pids\n")
    (base / "cgroup.subtree_control").write_text("")
    (base / "cgroup.procs").write_text("4242\n")
    self_cgroup = tmp_path / "self-cgroup"
    self_cgroup.write_text("0::/system.slice/grader.service\n")
    mounts = tmp_path / "mountinfo"
    mounts.write_text(f"30 23 0:26 / {root} rw,nosuid - cgroup2 cgroup2 rw\n")
    assert cgroup.delegated(str(self_cgroup), str(mounts)) == base
    v1 = tmp_path / "v1-cgroup"
    v1.write_text("4:memory:/x\n0::/system.slice/grader.service\n")
    assert cgroup.delegated(str(v1), str(mounts)) is None
    (base / "cgroup.controllers").write_text("cpu memory\n")
    assert cgroup.delegated(str(self_cgroup), str(mounts)) is None
    (base / "cgroup.controllers").write_text("cpu memory pids\n")
    box = cgroup.SandboxCgroup(base, 3, memory_bytes=1024 * MB, processes=64)
    assert (base / cgroup.SUPERVISOR / "cgroup.procs").read_text() == "4242"
    assert (base / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert (box.path / "memory.max").read_text() == str(1024 * MB) and (box.path / "pids.max").read_text() == "64"
    assert box.wrap(["bwrap", "x"])[-2:] == ["bwrap", "x"] and str(box.path) in box.wrap(["bwrap"])
    (box.path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert box.ran_out_of_memory() and not box.hit_process_limit()


def test_without_the_seccomp_filter_the_sandbox_refuses_with_one_line(monkeypatch):
    from grader.execution import seccomp

    def missing():
        raise seccomp.SeccompUnavailable("pyseccomp or libseccomp2 is missing (test)")

    monkeypatch.setattr(seccomp, "filter_fd", missing)
    sandbox.sandbox_problem.cache_clear()
    try:
        problem = sandbox.sandbox_problem()
    finally:
        sandbox.sandbox_problem.cache_clear()
    assert problem.startswith("the sandbox's seccomp filter cannot be built: pyseccomp or libseccomp2 is missing")
    assert "--no-sandbox" in problem and "\n" not in problem


def test_the_filter_fd_holds_the_whole_program_for_bwrap_to_read():
    from grader.execution import seccomp

    program = seccomp.filter_program()
    assert len(program) % 8 == 0 and len(program) >= 8 * 8  # BPF instructions of 8 bytes each
    fd = seccomp.filter_fd()
    try:
        assert os.read(fd, 1 << 16) == program
    finally:
        os.close(fd)

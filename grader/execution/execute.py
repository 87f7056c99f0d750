"""Run one student's notebook in the sandbox: prepare its work dir, start the runner, read its status.

The runner (grader/runner.py) executes the notebook inside bubblewrap and writes a status
file; this side only copies files in, enforces the total time from outside (the sandbox dies
with its bwrap), and turns whatever came back, or did not, into an `ExecResult`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from grader.common.atomic import write_json_atomic
from grader.common.errors import UserError
from grader.common.walk import remove_tree, rglob_files, walk
from grader.execution import fontcache
from grader.execution import sandbox as sb
from grader.execution.cgroup import SandboxCgroup, delegated
from grader.execution.limits import Limits
from grader.execution.runner import one_line
from grader.execution.seccomp import filter_fd
from grader.execution.watchdog import Verdict, Watchdog

STATUSES = ("ok", "error", "timeout", "memory", "died")
ANSWERS_ASIDE = "submitted-answers"
SKIP_ANYWHERE = {"__MACOSX", "__pycache__", ".ipynb_checkpoints"}
HOST_GRACE_S = 30.0
TERM_GRACE_S = 5.0
STATUS_MAX_BYTES = 1 << 16
RUNS_MAX_BYTES = 4 << 20
LOG_TAIL_BYTES = 1 << 14
DEFAULT_THREADS = 2
EXECUTED = "executed.ipynb"
SANDBOX_TASKS = 2  # bwrap and its init in the pid namespace: the grader's, not the notebook's


@dataclass(frozen=True)
class ExecResult:
    status: str
    reason: str
    cell: int | None = None
    executed: str | None = None
    duration_s: float = 0.0
    timing: dict | None = None
    reported_runs: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


# the work dir ----------------------------------------------------------------------------------

def prepare_workdir(submission, workdir, *, answer_files) -> Path:
    """Copy a submission (folder or .ipynb) into an empty work dir; -> the notebook to run.

    Symlinks are followed only to files inside the submission. Answer files that came with
    it go to submitted-answers/, so only what the notebook writes is graded; the lab kit
    is installed as src/fmnist_utils.py unless the submission has its own.
    """
    submission, workdir = Path(submission), Path(workdir)
    if not os.path.lexists(submission):
        raise UserError(f"{submission}: no such file or folder")
    if workdir.exists() and any(workdir.iterdir()):
        raise UserError(f"{workdir}: the work dir must be empty")
    workdir.mkdir(parents=True, exist_ok=True)
    if submission.is_dir() and not submission.is_symlink():
        _copy_folder(submission, workdir)
    elif submission.is_file() and submission.suffix == ".ipynb":
        shutil.copyfile(submission, workdir / submission.name)
    else:
        raise UserError(f"{submission.name}: not a notebook (.ipynb) or a folder holding one")
    notebook = find_notebook(workdir)
    for name in answer_files:
        found = workdir / name
        if os.path.lexists(found):
            (workdir / ANSWERS_ASIDE).mkdir(exist_ok=True)
            os.replace(found, workdir / ANSWERS_ASIDE / name)
    from reference.kit_install import install_kit

    install_kit(workdir)
    return notebook


def _copy_folder(root: Path, dest: Path) -> None:
    real_root = root.resolve()
    for dirpath, dirnames, filenames in walk(root):
        here = Path(dirpath)
        rel = here.relative_to(root)
        keep = []
        for name in sorted(dirnames):
            if (here / name).is_symlink() or name in SKIP_ANYWHERE or (rel == Path(".") and name == sb.STATE):
                continue
            (dest / rel / name).mkdir()
            keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            source = _regular_inside(here / name, real_root)
            if source is not None:
                shutil.copyfile(source, dest / rel / name)


def _regular_inside(path: Path, real_root: Path) -> Path | None:
    """The file to copy for `path`: itself, or a symlink's target when that lies inside the submission."""
    try:
        if path.is_symlink():
            target = path.resolve(strict=True)
            if not target.is_relative_to(real_root):
                return None
            path = target
        return path if stat.S_ISREG(path.lstat().st_mode) else None
    except (OSError, RuntimeError):
        return None


def find_notebook(workdir: Path) -> Path:
    """The one .ipynb at the top of the work dir, or a UserError a student can act on."""
    found = sorted(p for p in workdir.iterdir()
                   if p.suffix == ".ipynb" and not p.name.startswith(".") and p.is_file() and not p.is_symlink())
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(p.name for p in found[:4]) + (", …" if len(found) > 4 else "")
        raise UserError(f"{len(found)} notebooks at the top of the submission ({names}): submit exactly one")
    nested = sorted(p.relative_to(workdir).as_posix() for p in rglob_files(workdir, ".ipynb"))
    hint = f"; found {nested[0]} in a sub-folder: move it to the top" if nested else ""
    raise UserError(f"no notebook (.ipynb) at the top of the submission{hint}")


# running ---------------------------------------------------------------------------------------

def execute_notebook(notebook, workdir, *, limits: Limits, data_dir, preamble, sandbox: bool = True,
                     slot: int = 0, seed: int = 0, threads: int = DEFAULT_THREADS,
                     stop: threading.Event | None = None, train_socket: Path | None = None,
                     data_cache: Path | None = None, font_cache: Path | None = None,
                     warn_unsandboxed: bool = True) -> ExecResult:
    """Execute a prepared notebook in its work dir under `limits`; never raises for the notebook's faults.

    train_socket: the host path of this notebook's training-service session (grader/service), if any.
    data_cache: the grader's verified decoded copy of data_dir (reference/datacache.py), if any.
    font_cache: the folder holding matplotlib's font list (fontcache.py), if any.
    warn_unsandboxed: say on stderr that sandbox=False runs without bubblewrap (off where the caller said why).

    Raises UserError only for the grader's own setup: no bubblewrap, no data dir. Setting `stop`
    (the grader was interrupted) kills the sandbox at once and raises ExecutionStopped.
    """
    workdir = Path(workdir).resolve()
    notebook = Path(notebook).absolute()
    if notebook.parent.resolve() != workdir:
        raise UserError(f"{notebook}: the notebook must be at the top of its work dir {workdir}")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise UserError(f"data dir {data_dir} does not exist; pass --data-dir or set LABGRADER_DATA")
    if sandbox:
        sb.require_sandbox()
        if data_dir is not None and sb.privileged():
            _check_world_readable(Path(data_dir))
    elif warn_unsandboxed:
        _warn_unsandboxed()

    state = workdir / sb.STATE
    _remove(state)
    state.mkdir()
    job = {"notebook": notebook.name, "preamble": list(preamble or []), "seed": int(seed), "executed": EXECUTED,
           "limits": limits.as_dict(), "sandboxed": bool(sandbox)}
    write_json_atomic(state / "job.json", job)
    fontcache.seed(font_cache, state / sb.MPL_DIR)
    if data_dir is None:
        data_cache = None

    group = _sandbox_cgroup(limits, slot) if sandbox else None
    fds: tuple[int, ...] = ()
    try:
        if sandbox:
            if sb.privileged():
                _chown_tree(workdir, sb.uid_for_slot(slot))
            fds = (filter_fd(),)
            env = sb.runner_env(home=sb.WORKDIR, data=sb.DATADIR if data_dir is not None else None,
                                threads=threads, seed=seed, train_socket=sb.TRAIN_SOCKET if train_socket else None,
                                data_cache=sb.DATACACHE if data_cache is not None else None)
            argv = sb.bwrap_argv(workdir=workdir, data_dir=Path(data_dir) if data_dir is not None else None,
                                 limits=limits, slot=slot, command=sb.runner_argv(sb.WORKDIR / sb.STATE / "job.json"),
                                 train_socket=train_socket, seccomp_fd=fds[0], data_cache=data_cache)
            if group is not None:
                argv = group.wrap(argv)
        else:
            (state / "tmp").mkdir()
            env = sb.runner_env(home=workdir, data=Path(data_dir).resolve() if data_dir is not None else None,
                                threads=threads, seed=seed, tmp=state / "tmp", train_socket=train_socket,
                                data_cache=Path(data_cache).resolve() if data_cache is not None else None)
            argv = sb.direct_argv(limits, sb.runner_argv(state / "job.json"))

        def watch(pid: int) -> Watchdog:
            return Watchdog(pid, workdir, memory_bytes=None if group else limits.memory_mb * sb.MIB,
                            processes=None if group else limits.processes + (SANDBOX_TASKS if sandbox else 0),
                            disk_bytes=limits.disk_mb * sb.MIB, disk_files=limits.disk_files,
                            tmpfs=str(sb.WORKDIR) if sandbox else None)

        start = time.monotonic()
        returncode, killed, log, verdict = _run(argv, env, workdir, limits.timeout + HOST_GRACE_S, group_kill=not sandbox,
                                                stop=stop, pass_fds=fds, watch=watch)
        duration = round(time.monotonic() - start, 3)
        if group is not None and verdict is None and group.ran_out_of_memory():
            verdict = Verdict("memory", f"the notebook's processes together used more than {limits.memory_mb} MiB of "
                                        "memory (--memory)")
    finally:
        for fd in fds:
            os.close(fd)
        if group is not None:
            group.close()
    if (killed or verdict) and sandbox and sb.privileged():
        _await_uid_gone(sb.uid_for_slot(slot))
    status = _read_status(workdir)
    timing = stage_times(status, start, duration)
    reported = _read_state_file(workdir, sb.RUNS_FILE, RUNS_MAX_BYTES, cut=True)
    reported = reported.decode("utf-8", "replace") if reported is not None else None
    if verdict is not None and not killed:
        cell, where = _where(status)
        return ExecResult(verdict.status, one_line(f"{verdict.reason}; stopped in {where}"), cell, None, duration, timing,
                          reported)
    return dataclasses.replace(_interpret(status, workdir, limits, returncode, killed, log, duration), timing=timing,
                               reported_runs=reported)


def stage_times(status: dict | None, start: float, duration: float) -> dict | None:
    """The runner's timestamps as seconds per stage: starting the sandbox and the runner, the kernel, the
    setup cell, the student's cells, and shutting down. The status file is the sandbox's, so anything
    that is not a number inside this execution's time is dropped."""
    raw = status.get("timing") if isinstance(status, dict) else None
    if not isinstance(raw, dict):
        return None

    def at(name):
        v = raw.get(name)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and start <= v <= start + duration + 1
        return float(v) if ok else None

    runner, kernel, end = at("runner"), at("kernel"), at("end")
    cells = raw.get("cells") if isinstance(raw.get("cells"), list) else []
    cells = [[int(n), round(float(t), 3)] for n, t in (c for c in cells[:10000] if _cell_time(c)) if t <= duration + 1]
    out = {"sandbox_start_s": runner - start if runner else None,
           "kernel_start_s": kernel - runner if runner and kernel and kernel >= runner else None,
           "setup_cell_s": sum(t for n, t in cells if n == 0),
           "student_cells_s": sum(t for n, t in cells if n > 0),
           "after_last_cell_s": start + duration - end if end else None,
           "cells": [[n, t] for n, t in cells if n > 0]}
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items() if v is not None}


def _cell_time(c) -> bool:
    return (isinstance(c, list) and len(c) == 2 and isinstance(c[0], int) and not isinstance(c[0], bool) and 0 <= c[0] < 1 << 20
            and isinstance(c[1], (int, float)) and not isinstance(c[1], bool) and 0 <= c[1] < 1e7)


def _sandbox_cgroup(limits: Limits, slot: int) -> SandboxCgroup | None:
    """This sandbox's own cgroup where the host delegates a v2 subtree (never on a v1 host)."""
    base = delegated()
    if base is None:
        return None
    try:
        return SandboxCgroup(base, slot, memory_bytes=limits.memory_mb * sb.MIB, processes=limits.processes)
    except OSError as e:
        raise UserError(f"cannot make a cgroup for the sandbox in the delegated {base} ({e.strerror or e})") from None


def _where(status: dict | None) -> tuple[int | None, str]:
    """The failing cell's number from the runner's status file and how messages name it
    (`cell 4 «first line»`, else `cell 4`, else `the notebook`)."""
    cell = status.get("cell") if status else None
    if not (isinstance(cell, int) and not isinstance(cell, bool) and cell > 0):
        return None, "the notebook"
    label = status.get("cell_label")
    return cell, one_line(label, 80) if isinstance(label, str) and label.startswith(f"cell {cell} ") else f"cell {cell}"


class ExecutionStopped(Exception):
    """The grader asked a running notebook to stop (Ctrl-C): its result must not be kept."""


def _run(argv, env, cwd, wall_s, *, group_kill: bool, stop: threading.Event | None = None, pass_fds=(),
         watch=None) -> tuple[int | None, bool, str, Verdict | None]:
    """Run to the end, to wall_s, to `stop` or to a limit the watchdog made by watch(pid) finds passed;
    -> (return code, killed for time, tail of its output, the watchdog's verdict)."""
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, pass_fds=pass_fds)
    dog = watch(proc.pid).start() if watch is not None else None
    tail: collections.deque[bytes] = collections.deque()
    reader = threading.Thread(target=_drain, args=(proc.stdout, tail), daemon=True)
    reader.start()
    killed = False
    deadline = time.monotonic() + wall_s
    try:
        while proc.poll() is None:
            if stop is not None and stop.is_set():
                raise ExecutionStopped("stopped by the grader")
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(argv, wall_s)
            try:
                proc.wait(timeout=min(left, 0.25))
            except subprocess.TimeoutExpired:
                pass
    except subprocess.TimeoutExpired:
        killed = True
        _stop(proc, group_kill)
    except BaseException:
        _stop(proc, group_kill)
        raise
    finally:
        verdict = dog.stop() if dog is not None else None
        reader.join(timeout=5)
    return proc.returncode, killed, b"".join(tail).decode(errors="replace"), verdict


def _drain(stream, tail: collections.deque) -> None:
    """Keep the last LOG_TAIL_BYTES of the runner's output, however much the notebook writes."""
    size = 0
    for chunk in iter(lambda: stream.read1(65536), b""):
        tail.append(chunk)
        size += len(chunk)
        while size > LOG_TAIL_BYTES and len(tail) > 1:
            size -= len(tail.popleft())
    stream.close()


def _stop(proc: subprocess.Popen, group_kill: bool) -> None:
    """Sandboxed: SIGKILL to bwrap takes the whole sandbox (--die-with-parent, pid namespace).
    Unsandboxed: SIGTERM lets the runner stop its kernel, then SIGKILL the group."""
    def signal_group(sig):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    if group_kill:
        signal_group(signal.SIGTERM)
        try:
            proc.wait(timeout=TERM_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            pass
    signal_group(signal.SIGKILL)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def _state_dir(workdir: Path) -> Path | None:
    """The runner's folder, unless the notebook replaced it with a link (checked after the sandbox is gone)."""
    state = workdir / sb.STATE
    try:
        return state if stat.S_ISDIR(state.lstat().st_mode) else None
    except OSError:
        return None


def _await_uid_gone(uid: int, wait_s: float = 10.0) -> None:
    """After killing bwrap, its pid namespace dies a moment later; wait, so the slot's next
    notebook does not start with the dying processes still counted against its process limit."""
    end = time.monotonic() + wait_s
    while time.monotonic() < end and _uid_has_processes(uid):
        time.sleep(0.05)


def _uid_has_processes(uid: int) -> bool:
    """By the real uid in /proc/PID/status: a non-dumpable process's /proc folder belongs to root."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/status", "rb") as f:
                    for line in f:
                        if line.startswith(b"Uid:"):
                            if int(line.split()[1]) == uid:
                                return True
                            break
            except (OSError, ValueError):
                continue
    return False


def _read_state_file(workdir: Path, name: str, max_bytes: int, cut: bool = False) -> bytes | None:
    """A file of the work dir's state folder, opened without following links or blocking on a fifo the
    notebook left; None when absent, not a plain file, or over max_bytes (cut=True: its first max_bytes)."""
    state = _state_dir(workdir)
    if state is None:
        return None
    try:
        fd = os.open(state / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        return data[:max_bytes] if cut else None
    return data


def _read_status(workdir: Path) -> dict | None:
    """The runner's status.json."""
    data = _read_state_file(workdir, "status.json", STATUS_MAX_BYTES)
    if data is None:
        return None
    try:
        status = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return status if isinstance(status, dict) else None


def _interpret(status: dict | None, workdir: Path, limits: Limits, returncode, killed: bool, log: str,
               duration: float) -> ExecResult:
    cell, where = _where(status)
    if killed:
        return ExecResult("timeout", f"the notebook ran longer than {limits.timeout:g} s (stopped in {where})",
                          cell, _executed(status, workdir), duration)
    if status and status.get("phase") == "done" and status.get("status") in STATUSES and returncode == 0:
        reason = one_line(status.get("reason") or status["status"])
        return ExecResult(status["status"], reason, cell, _executed(status, workdir), duration)
    problem = _bwrap_problem(log)
    if problem:
        return ExecResult("died", f"the sandbox did not start ({problem})", None, None, duration)
    if status is None:
        last = _last_line(log) or f"exit code {returncode}"
        return ExecResult("died", f"the notebook's runner stopped before the notebook started ({last}); "
                                  f"check the limits, e.g. --memory {limits.memory_mb} may be too low", None, None, duration)
    return ExecResult("died", f"the run ended without a result while in {where} (runner exit code {returncode}); "
                              "the notebook may have killed the grader's processes", cell, None, duration)


def _executed(status: dict | None, workdir: Path) -> str | None:
    """The executed notebook, when the runner wrote it and it is still a plain file in its folder."""
    expected = f"{sb.STATE}/{EXECUTED}"
    if not status or status.get("executed") != expected or _state_dir(workdir) is None:
        return None
    path = workdir / expected
    try:
        return str(path) if stat.S_ISREG(path.lstat().st_mode) else None
    except OSError:
        return None


def _bwrap_problem(log: str) -> str | None:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip().startswith(("bwrap:", "setpriv:", "prlimit:"))]
    return one_line(lines[-1], 200) if lines else None


def _check_world_readable(data_dir: Path) -> None:
    """The notebook reads the data as an unprivileged uid with no groups: only 'other' bits count."""
    entries = [data_dir] + [p for p in data_dir.iterdir() if not p.name.startswith(".")]
    for p in entries:
        need = stat.S_IROTH | (stat.S_IXOTH if p.is_dir() else 0)
        if p.stat().st_mode & need != need:
            raise UserError(f"the sandbox cannot read the data in {data_dir} ({p.name} is not world-readable): "
                            f"run chmod -R a+rX {data_dir}")


def _last_line(log: str) -> str:
    lines = [ln for ln in log.splitlines() if ln.strip()]
    return one_line(lines[-1], 160) if lines else ""


def _chown_tree(root: Path, uid: int) -> None:
    """Hand the work dir to the slot's uid, the only place it may write."""
    os.lchown(root, uid, uid)
    for dirpath, dirnames, filenames in walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, uid)


def remove_workdir(path: Path) -> bool:
    """Delete a work dir however deep or wide the notebook made it; -> False when something could
    not be removed (the caller goes on: a left-over work dir never costs a student's result)."""
    try:
        remove_tree(path)
    except OSError:
        return False
    return True


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        remove_tree(path)


@functools.lru_cache(maxsize=None)
def _warn_unsandboxed() -> None:
    print("labgrader: --no-sandbox: notebooks run without bubblewrap, with your files, network and uid "
          "(only memory, time and file-size limits apply)", file=sys.stderr)

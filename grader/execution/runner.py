"""Runs one notebook inside the sandbox and writes what happened, for execute.py to read.

    python -I -m grader.execution.runner WORKDIR/.labgrader/job.json

It is the only labgrader code next to the student's kernel: it imports little, caps what the
kernel can make it hold, and always ends by writing status.json (atomically) beside the job.
The kernel runs as the same uid, so this status is a convenience for feedback, not a proof:
answers are judged from the answer files alone.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from grader.common.atomic import write_json_atomic, write_text_atomic
from grader.common.text import cell_label, json_kind
from grader.execution import lazy_dynamo

NOTE = "[output truncated by labgrader]"
PREAMBLE_TAG = "labgrader-preamble"
SETUP_SECONDS = 120.0
KERNEL_NAME = "labgrader-python"
NOTEBOOK_OUTPUT_FACTOR = 16
REASON_WIDTH = 300
MEMORY_NEAR = 0.9
PR_SET_DUMPABLE = 4
MEMORY_WORDS = ("MemoryError", "can't allocate memory", "Unable to allocate", "out of memory", "bad_alloc",
                "Cannot allocate memory")

PREAMBLE_NOTE = ("**Added by labgrader.** The next cell sets up what the lab assumes: the imports earlier labs "
                 "made and fixed random seeds. It runs before your first cell. Cell numbers in the grader's "
                 "messages count your code cells only, starting at 1.")

SEED_CODE = '''def _labgrader_seed(seed):
    """The same random numbers for every run of this notebook."""
    import random, sys
    random.seed(seed)
    try:
        import numpy
        numpy.random.seed(seed)
    except ImportError:
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)
_labgrader_seed({seed})
del _labgrader_seed'''

# Runs in the kernel at start-up (IPython startup file): bounds print output at the source,
# so a 50 MB print never travels to the runner in one message.
KERNEL_CAP = '''def _labgrader_cap(limit, note):
    import sys
    state = {{"used": 0, "cut": False}}

    def wrap(stream):
        write = stream.write

        def capped(text):
            if not isinstance(text, str):
                return write(text)
            room = limit - state["used"]
            if room >= len(text):
                state["used"] += len(text)
                return write(text)
            if not state["cut"]:
                state["cut"] = True
                state["used"] = limit
                write(text[:max(room, 0)] + note)
            return len(text)
        stream.write = capped

    def reset(*args):
        state["used"], state["cut"] = 0, False
    for stream in (sys.stdout, sys.stderr):
        wrap(stream)
    get_ipython().events.register("pre_run_cell", reset)
_labgrader_cap({limit}, {note!r})
del _labgrader_cap
'''


def notebook_shape_problem(data) -> str | None:
    """What makes parsed JSON not a notebook at all, in a student's words (nbformat's own errors
    read "'str' object has no attribute 'get'")."""
    if not isinstance(data, dict):
        return f"it holds {json_kind(data)}, not a notebook object"
    if "worksheets" in data:
        return None  # nbformat 3 and older keep cells in worksheets; nbformat.reads judges and upgrades them
    cells = data.get("cells")
    if not isinstance(cells, list):
        return "it has no list of cells" if cells is None else f"its cells are {json_kind(cells)}, not a list"
    for number, cell in enumerate(cells, 1):
        if not isinstance(cell, dict):
            return f"its cell {number} is {json_kind(cell)}, not a cell"
    return None


def one_line(text: object, width: int = REASON_WIDTH) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def exception_line(ename: str, evalue: str) -> str:
    return one_line(f"{ename}: {evalue}" if evalue else ename)


def output_size(out) -> int:
    """Characters an output holds, about what it costs in the executed notebook."""
    kind = out.get("output_type")
    if kind == "stream":
        return len(out.get("text", ""))
    if kind == "error":
        return sum(len(line) for line in out.get("traceback", [])) + len(out.get("evalue", ""))
    data = out.get("data", {}) or {}
    return sum(len(v) if isinstance(v, str) else len(json.dumps(v)) for v in data.values()) + 64


def note_output(limit_bytes: int):
    from nbformat.v4 import new_output

    return new_output("stream", name="stdout",
                      text=f"\n{NOTE}: this cell's output passed {limit_bytes // 1024} KiB; the rest was dropped\n")


def trim_error(out, keep: int):
    """An error output with its traceback shortened to about `keep` characters (the last frames)."""
    lines, total = [], 0
    for line in reversed(out.get("traceback", [])):
        if total + len(line) > keep:
            lines.append(line[-max(keep - total, 0):] if not lines else f"... {NOTE} ...")
            break
        lines.append(line)
        total += len(line)
    out["traceback"] = list(reversed(lines))
    out["evalue"] = out.get("evalue", "")[:keep]
    return out


def settle_text(text: str) -> str:
    """What a terminal would show: backspaces erase, a carriage return restarts its line.

    nbclient's coalesce_streams does this with regexes that are quadratic on a long line
    (seconds for 64 KiB, hours for 1 MiB), so it is off and this linear version runs instead.
    """
    if "\b" in text:
        out: list[str] = []
        for ch in text:
            if ch == "\b" and out and out[-1] != "\n":
                out.pop()
            else:
                out.append(ch)
        text = "".join(out)
    if "\r" in text:
        lines = text.split("\n")
        for i, line in enumerate(lines):
            cut = line.rfind("\r", 0, len(line) - 1)
            if cut >= 0:
                lines[i] = line[cut + 1:]
        text = "\n".join(lines)
    return text


def coalesce_streams(outputs: list) -> list:
    """Consecutive stream outputs of one name as one output, settled."""
    merged: list = []
    for out in outputs:
        if (out.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == out.get("name")):
            merged[-1]["text"] += out.get("text", "")
        else:
            merged.append(out)
    for out in merged:
        if out.get("output_type") == "stream":
            out["text"] = settle_text(out.get("text", ""))
    return merged


def cap_outputs(outputs: list, limit: int) -> tuple[list, bool]:
    """Outputs of one cell cut to `limit` characters, errors kept (shortened); -> (outputs, cut)."""
    kept, used, cut = [], 0, False
    for out in outputs:
        if out.get("output_type") == "error":
            kept.append(trim_error(out, max(limit // 4, 2048)))
            continue
        if cut:
            continue
        size = output_size(out)
        if used + size <= limit:
            kept.append(out)
            used += size
            continue
        cut = True
        if out.get("output_type") == "stream" and limit > used:
            out["text"] = out["text"][: limit - used]
            kept.append(out)
        kept.append(note_output(limit))
    return kept, cut


def make_client_class():
    """NotebookClient whose `output` drops what passes the cap while the cell still runs.

    nbclient has no hook per output message, and it keeps every one of them until the cell
    ends, so this one method is overridden; everything else uses nbclient's hooks.
    """
    from nbclient import NotebookClient
    from traitlets import Integer

    class CappedClient(NotebookClient):
        output_limit = Integer(1 << 20, help="characters of output kept per cell")

        def output(self, outs, msg, display_id, cell_index):
            if self.clear_before_next_output or not outs:
                self._cap_used, self._cap_cut = 0, False
            if msg["msg_type"] == "error":
                out = super().output(outs, msg, display_id, cell_index)
                if out is not None:
                    trim_error(out, max(self.output_limit // 4, 2048))
                return out
            if getattr(self, "_cap_cut", False):
                return None
            content = msg.get("content", {})
            size = output_size({"output_type": msg["msg_type"], **content})
            if self._cap_used + size <= self.output_limit:
                self._cap_used += size
                return super().output(outs, msg, display_id, cell_index)
            self._cap_cut = True
            if msg["msg_type"] == "stream" and self.output_limit > self._cap_used:
                from nbformat.v4 import new_output

                text = content.get("text", "")[: self.output_limit - self._cap_used]
                outs.append(new_output("stream", name=content.get("name", "stdout"), text=text))
            outs.append(note_output(self.output_limit))
            return None

    return CappedClient


class KernelWatch:
    """Samples the kernel's peak address space, to tell an out-of-memory death from other deaths."""

    def __init__(self, process):
        self.process = process
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="labgrader-kernel-watch", daemon=True)
        self._thread.start()

    def _run(self):
        path = f"/proc/{self.process.pid}/status"
        while True:
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("VmPeak:"):
                            self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                            break
            except (OSError, ValueError):
                return
            if self._stop.wait(0.1):
                return

    def stop(self):
        self._stop.set()

    def returncode(self):
        try:
            return self.process.poll()
        except Exception:
            return None


class Run:
    """One notebook's execution: load, add the preamble, run, classify, write."""

    def __init__(self, job: dict, state: Path):
        self.job = job
        self.state = state
        self.workdir = state.parent
        self.limits = job["limits"]
        self.notebook_path = self.workdir / job["notebook"]
        self.start = time.monotonic()
        self.deadline = self.start + float(self.limits["timeout"])
        self.output_limit = int(self.limits["output_kb"]) * 1024
        self.memory_bytes = int(self.limits["memory_mb"]) << 20
        self.cell_numbers: dict[int, int] = {}
        self.current: int | None = None
        self.error: tuple[str, str] | None = None
        self.by_total = False
        self.watch: KernelWatch | None = None
        self.kept = 0
        self.nb = None
        self.kernel_ready: float | None = None
        self.cell_started: float | None = None
        self.cell_times: list[list] = []

    # status ------------------------------------------------------------------------------------
    def progress(self, cell: int | None) -> None:
        """Where the notebook is, for the host to name if it has to stop it: the cell and its label."""
        self.write_status({"phase": "running", "status": "running", "reason": "", "cell": cell,
                           "cell_label": self.where() if cell else None})

    def write_status(self, status: dict) -> None:
        status = {**status, "duration_s": round(time.monotonic() - self.start, 3)}
        write_json_atomic(self.state / "status.json", status)

    def result(self, status: str, reason: str, cell: int | None = None) -> dict:
        return {"phase": "done", "status": status, "reason": one_line(reason), "cell": cell,
                "executed": None}

    def timing(self) -> dict:
        """Where the time went, on the host's monotonic clock: runner start, kernel ready, end; each code
        cell's seconds by its number (0: the setup cell)."""
        return {"runner": self.start, "kernel": self.kernel_ready, "end": time.monotonic(), "cells": self.cell_times}

    # loading -----------------------------------------------------------------------------------
    def load(self):
        """-> (notebook, None) or (None, problem result); v3 and older 4.x are upgraded.

        Submitted outputs are cleared: the executed notebook shows only what this run printed.
        """
        import nbformat

        name = self.notebook_path.name
        try:
            raw = self.notebook_path.read_bytes()
        except OSError as e:
            return None, self.result("error", f"cannot read {name} ({e.strerror or e})")
        if not raw.strip():
            return None, self.result("error", f"{name} is empty (0 bytes of notebook): save it in Jupyter and submit it again")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            return None, self.result("error", f"{name} is not a Jupyter notebook: it is not UTF-8 text")
        try:
            data = json.loads(text)
        except ValueError as e:
            return None, self.result("error", f"{name} is not a Jupyter notebook: it is not JSON ({e}); "
                                              "submit the .ipynb file that Jupyter saves")
        shape = notebook_shape_problem(data)
        if shape:
            return None, self.result("error", f"{name} is not a Jupyter notebook: {shape}; "
                                              "submit the .ipynb file that Jupyter saves")
        try:
            nb = nbformat.reads(text, as_version=4)
            if nb.nbformat_minor < 5:
                nb = nbformat.v4.upgrade(nb, from_version=4, from_minor=nb.nbformat_minor)
            nb.cells = [c for c in nb.cells if c.get("cell_type") in ("code", "markdown", "raw")]
            for cell in nb.cells:
                cell.setdefault("metadata", {})
                if cell.cell_type == "code":
                    cell.outputs, cell.execution_count = [], None
                else:
                    cell.pop("outputs", None)
                    cell.pop("execution_count", None)
        except Exception as e:
            return None, self.result("error", f"{name} is not a valid Jupyter notebook ({one_line(e, 160)})")
        return nb, None

    def add_preamble(self, nb) -> None:
        """The spec's environment preamble and seeding as the first code cell, said so in a note."""
        from nbformat.v4 import new_code_cell, new_markdown_cell

        code = "\n".join(list(self.job.get("preamble", [])) + [SEED_CODE.format(seed=int(self.job.get("seed", 0)))])
        cell = new_code_cell(code, metadata={"tags": [PREAMBLE_TAG], "editable": False})
        note = new_markdown_cell(PREAMBLE_NOTE, metadata={"tags": [PREAMBLE_TAG]})
        nb.cells[:0] = [note, cell]
        number = 0
        for index, c in enumerate(nb.cells[2:], start=2):
            if c.cell_type == "code":
                number += 1
                self.cell_numbers[index] = number

    def where(self) -> str:
        if self.current is None:
            return "before the first cell"
        number = self.cell_numbers.get(self.current)
        if not number:
            return "the setup cell labgrader adds before your first cell"
        return cell_label(number, self.nb.cells[self.current].source if self.nb is not None else None)

    # the kernel --------------------------------------------------------------------------------
    def prepare_kernel(self) -> None:
        """A kernelspec for this very interpreter; the output cap and the lazy torch._dynamo as IPython startup files."""
        kernels = Path(os.environ.get("JUPYTER_PATH", self.state / "jupyter")) / "kernels" / KERNEL_NAME
        kernels.mkdir(parents=True, exist_ok=True)
        spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                         "--HistoryManager.enabled=False"],
                "display_name": "Python 3 (labgrader)", "language": "python"}
        write_json_atomic(kernels / "kernel.json", spec)
        startup = Path(os.environ.get("IPYTHONDIR", self.state / "ipython")) / "profile_default" / "startup"
        startup.mkdir(parents=True, exist_ok=True)
        write_text_atomic(startup / "00-labgrader-output-cap.py",
                          KERNEL_CAP.format(limit=self.output_limit + 1024, note="\n" + NOTE + "\n"))
        write_text_atomic(startup / "01-labgrader-lazy-dynamo.py", lazy_dynamo.startup_code())
        for var in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR"):
            if os.environ.get(var):
                Path(os.environ[var]).mkdir(parents=True, exist_ok=True)

    def cell_timeout(self, cell) -> float:
        """The setup cell imports torch, slow on a cold disk: it gets SETUP_SECONDS, not the students' per-cell limit."""
        remaining = self.deadline - time.monotonic()
        per_cell = float(self.limits["cell_timeout"])
        if PREAMBLE_TAG in cell.get("metadata", {}).get("tags", []):
            per_cell = max(per_cell, SETUP_SECONDS)
        self.by_total = remaining < per_cell
        return max(0.5, min(per_cell, remaining))

    def on_notebook_start(self, notebook=None, **_):
        self.kernel_ready = time.monotonic()
        process = getattr(getattr(self.client.km, "provisioner", None), "process", None)
        if process is not None:
            self.watch = KernelWatch(process)

    def on_cell_start(self, cell, cell_index, **_):
        if cell.cell_type == "code":
            self.current = cell_index
            self.cell_started = time.monotonic()
            self.progress(self.cell_numbers.get(cell_index))

    def on_cell_error(self, cell, cell_index, execute_reply=None, **_):
        content = (execute_reply or {}).get("content", {})
        self.error = (str(content.get("ename", "error")), str(content.get("evalue", "")))

    def on_cell_executed(self, cell, cell_index, **_):
        """Streams merged, then capped again: display updates can grow outputs the first cap saw."""
        if cell.cell_type == "code" and self.cell_started is not None:
            self.cell_times.append([self.cell_numbers.get(cell_index, 0), round(time.monotonic() - self.cell_started, 4)])
        cell.outputs, _ = cap_outputs(coalesce_streams(cell.outputs), self.output_limit)
        size = sum(output_size(o) for o in cell.outputs)
        self.kept += size
        if self.kept > NOTEBOOK_OUTPUT_FACTOR * self.output_limit:
            cell.outputs = [o for o in cell.outputs if o.get("output_type") == "error"] + [note_output(self.output_limit)]

    # running -----------------------------------------------------------------------------------
    def execute(self) -> dict:
        nb, problem = self.load()
        if problem:
            return problem
        self.nb = nb
        self.add_preamble(nb)
        self.prepare_kernel()
        from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

        quiet = logging.getLogger("labgrader.runner.nbclient")
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
        self.client = make_client_class()(
            nb, kernel_name=KERNEL_NAME, timeout_func=self.cell_timeout, output_limit=self.output_limit,
            startup_timeout=int(max(5, min(60, self.deadline - time.monotonic()))), allow_errors=False,
            interrupt_on_timeout=False, shutdown_kernel="immediate", coalesce_streams=False, record_timing=False,
            resources={"metadata": {"path": str(self.workdir)}}, log=quiet,
            on_notebook_start=self.on_notebook_start, on_cell_start=self.on_cell_start,
            on_cell_error=self.on_cell_error, on_cell_executed=self.on_cell_executed)
        log = open(self.state / "kernel.log", "wb")
        try:
            self.client.execute(cwd=str(self.workdir), stdout=subprocess.DEVNULL, stderr=log)
            return self.result("ok", "the notebook ran to the end")
        except CellExecutionError:
            return self.failed()
        except CellTimeoutError:
            return self.timed_out()
        except DeadKernelError:
            return self.died()
        except Exception as e:
            if self.current is None:
                return self.result("died", f"the Python kernel did not start ({self.kernel_log_line() or one_line(e, 160)})")
            return self.died(str(e))
        finally:
            log.close()
            if self.watch:
                self.watch.stop()

    def failed(self) -> dict:
        ename, evalue = self.error or ("error", "")
        line = exception_line(ename, evalue)
        status = "memory" if any(w in line for w in MEMORY_WORDS) else "error"
        if status == "memory":
            line = f"{line} (the memory limit is {self.limits['memory_mb']} MiB)"
        number = self.cell_numbers.get(self.current) if self.current is not None else None
        if number is None:
            preamble = "; ".join(self.job.get("preamble", [])) or "seeding"
            return self.result(status, f"the setup cell labgrader adds before your first cell ({one_line(preamble, 80)}) failed: {line}")
        return self.result(status, f"{self.where()}: {line}", number)

    def timed_out(self) -> dict:
        number = self.cell_numbers.get(self.current) if self.current is not None else None
        if self.by_total:
            reason = f"the notebook ran longer than its {self.limits['timeout']:g} s (stopped in {self.where()})"
        elif number is None:
            reason = f"{self.where()} ran longer than {max(float(self.limits['cell_timeout']), SETUP_SECONDS):g} s and was stopped"
        else:
            reason = f"{self.where()} ran longer than {self.limits['cell_timeout']:g} s and was stopped"
        return self.result("timeout", reason, number)

    def died(self, detail: str = "") -> dict:
        number = self.cell_numbers.get(self.current) if self.current is not None else None
        code = self.watch.returncode() if self.watch else None
        peak = (self.watch.peak_kb * 1024) if self.watch else 0
        where = self.where()
        if code is not None and code < 0 and -code == getattr(signal, "SIGXCPU", -1):
            return self.result("timeout", f"{where} used up the kernel's {self.limits['cpu_seconds']:g} CPU seconds", number)
        if peak >= MEMORY_NEAR * self.memory_bytes or (code is not None and -code == signal.SIGKILL and peak >= 0.5 * self.memory_bytes):
            return self.result("memory", f"the kernel ran out of memory in {where} (limit {self.limits['memory_mb']} MiB)", number)
        how = describe_exit(code)
        if peak >= 0.5 * self.memory_bytes:
            how += f", after using {peak >> 20} of its {self.limits['memory_mb']} MiB of memory"
        return self.result("died", f"the Python kernel stopped in {where} ({how}); "
                                   "the code may call exit(), crash Python or kill its own process", number)

    def kernel_log_line(self) -> str:
        try:
            with open(self.state / "kernel.log", "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 4096))
                lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
            return one_line(lines[-1], 160) if lines else ""
        except OSError:
            return ""

    def write_executed(self) -> str | None:
        if self.nb is None:
            return None
        import nbformat

        target = self.state / self.job.get("executed", "executed.ipynb")
        try:
            text = nbformat.writes(self.nb, version=4)
        except Exception:
            text = json.dumps(self.nb, indent=1)
        try:
            write_text_atomic(target, text)
        except OSError:
            return None
        return str(target.relative_to(self.workdir))


def describe_exit(code) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def untraceable() -> None:
    """The kernel runs as the runner's uid: without this, its code could ptrace the runner or read and
    write /proc/RUNNER/mem (the seccomp filter refuses ptrace too, where there is one)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def end_leftovers(job: dict) -> None:
    """Kill every process the notebook left in the sandbox (a setsid daemon outlives its kernel) before the
    runner writes its verdict, so nothing of the student's can rewrite status.json or the executed notebook.

    kill(-1) reaches every process the caller may signal but itself and pid 1, so it runs only as pid 2 of a
    sandbox's own pid namespace (bwrap is pid 1 there; on a host, pid 2 is the kernel's kthreadd)."""
    if not job.get("sandboxed") or os.getpid() != 2 or os.getppid() != 1:
        return
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m grader.execution.runner JOB.json", file=sys.stderr)
        return 2
    untraceable()
    job_path = Path(argv[0])
    job = json.loads(job_path.read_text(encoding="utf-8"))
    run = Run(job, job_path.parent)
    try:
        status = run.execute()
    except BaseException as e:
        status = run.result("died", f"the grader's runner failed in {run.where()} ({type(e).__name__}: {one_line(e, 120)})")
    end_leftovers(job)
    status["executed"] = run.write_executed()
    status["timing"] = run.timing()
    run.write_status(status)
    return 0


if __name__ == "__main__":
    sys.exit(main())

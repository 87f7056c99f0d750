"""One submission through the stages: copy, execute, collect, validate, score -> its result dict.

Whatever goes wrong while handling a student becomes that student's status and one-line reason;
`SetupError` alone (no sandbox, no data) stops the batch, since no submission could be graded.
Each stage runs inside `stage(...)`, so an unexpected failure says where it happened
("grader failed while writing feedback: ..."); `grade_or_fail` is the boundary around one student.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from grader.common.errors import UserError
from grader.common.names import display, exact_hex, file_stem
from grader.common.text import one_line
from grader.common.walk import remove_tree, walk
from grader.execution.limits import Limits
from grader.assessment.runs import runs_record
from grader.assessment.validate import parse_answers, read_answer_file, validate_answers
from grader.grading.submissions import SKIP_NAMES, Submission

STATUSES = ("graded", "error", "timeout", "memory", "no-answers", "invalid-answers")


class SetupError(UserError):
    """The grader's own setup failed (no sandbox, no data): no submission can be graded, so stop."""


class StageError(Exception):
    """An unexpected failure while handling one student, named by its stage; becomes their `error` status."""

    def __init__(self, stage_name: str, error: BaseException):
        super().__init__(f"grader failed while {stage_name}: {describe(error)}")
        self.stage = stage_name


def describe(error: BaseException) -> str:
    """An exception as one line of valid text: its type, then its message."""
    text = display(one_line(str(error), 240))
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@contextlib.contextmanager
def stage(name: str):
    """Label what fails inside as this stage's failure; a UserError (already a reason) passes as it is."""
    try:
        yield
    except (UserError, StageError):
        raise
    except Exception as e:
        raise StageError(name, e) from e


@dataclass(frozen=True)
class Context:
    """Everything one student's grading needs; read-only, shared by the workers.

    data_cache and font_cache are folders of the machine that runs the notebooks (grading/caches.py):
    a Dask worker binds its own from the paths it receives.
    """

    spec: object
    ref: object
    out: Path
    limits: Limits
    data_dir: Path | None
    sandbox: bool
    no_execute: bool
    hide: bool
    threads: int
    stop: threading.Event = field(default_factory=threading.Event)
    service_options: object | None = None
    service: object | None = None
    keep_work: bool = False
    data_cache: Path | None = None
    font_cache: Path | None = None


def resolve_data_dir(args) -> tuple[Path, str]:
    """The data notebooks read: --data-dir, else $LABGRADER_DATA, else the demo's synthetic data."""
    if getattr(args, "data_dir", None):
        return Path(args.data_dir), "--data-dir"
    if os.environ.get("LABGRADER_DATA"):
        return Path(os.environ["LABGRADER_DATA"]), "$LABGRADER_DATA"
    from reference.synth import demo_data_dir

    return Path(demo_data_dir()), "the bundled demo's synthetic data (set --data-dir or $LABGRADER_DATA for Fashion-MNIST)"


def checked_data_dir(args) -> tuple[Path, str]:
    """resolve_data_dir, refused at once when the four files are not there: otherwise every notebook
    would fail at get_data() and a setup mistake would read as 300 students' errors."""
    from reference import fmnist

    data_dir, source = resolve_data_dir(args)
    if not data_dir.is_dir():
        raise UserError(f"data dir {data_dir} ({source}) is not a folder; `labgrader data fetch --data-dir {data_dir}` "
                        "downloads Fashion-MNIST into it")
    fmnist.ensure_files(data_dir, download=False)
    return data_dir, source


# one student -----------------------------------------------------------------------------------

def collect_answers(folder: Path | None, spec, *, search: bool = False) -> tuple[dict, list[str]]:
    """Each answer file -> parsed answers, a one-line reason it is unusable, or None when absent.

    Also returns every validation problem, one line each. search=True looks in sub-folders
    too (a submitted folder may nest its files), taking the shallowest match.
    """
    files: dict = {}
    problems: list[str] = []
    for name in spec.answer_files:
        path = _find(folder, name, search) if folder is not None else None
        if path is None:
            files[name] = None
            continue
        try:
            with stage("reading answer files"):
                data = read_answer_file(path)
        except UserError as e:
            files[name] = str(e)
            problems.append(str(e))
            continue
        with stage("validating answers"):
            problems += validate_answers(name, data)
            files[name] = parse_answers(name, data)
    return files, problems


def _find(folder: Path, name: str, search: bool) -> Path | None:
    direct = folder / name
    if os.path.lexists(direct):
        return direct
    if not search:
        return None
    found = []
    for dirpath, dirnames, filenames in walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_NAMES)
        if name in filenames:
            found.append(Path(dirpath) / name)
    return min(found, key=lambda p: (len(p.parts), str(p))) if found else None


def decide_status(exec_result, files: dict, problems: list[str], *, no_execute: bool) -> tuple[str, str]:
    """The one final status and its one-line reason; execution failures outrank answer problems."""
    if exec_result is not None:
        status = _get(exec_result, "status")
        reason = exec_reason(exec_result)
        if status != "ok":
            if status in ("error", "timeout", "memory"):
                return status, reason or {"error": "the notebook raised an error", "timeout": "ran out of time",
                                          "memory": "ran out of memory"}[status]
            return "error", reason or f"the kernel stopped ({status})"
    written = [n for n, v in files.items() if v is not None]
    if not written:
        names = " or ".join(files)
        where = "the submission holds no" if no_execute else "the notebook wrote no"
        return "no-answers", f"{where} {names}"
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return "invalid-answers", one_line(problems[0], 300) + more
    missing = [n for n, v in files.items() if v is None]
    if missing:
        return "graded", f"{', '.join(missing)} not written: its questions score 0"
    return "graded", "all answer files valid"


def exec_reason(exec_result) -> str:
    """The executor's reason on one line, naming the cell it stopped in."""
    reason = one_line(_get(exec_result, "reason") or "", 300)
    cell = _get(exec_result, "cell")
    if _get(exec_result, "status") != "ok" and cell is not None and not re.search(rf"\bcell {int(cell)}\b", reason):
        reason = f"cell {cell}: {reason}" if reason else f"cell {cell}"
    return reason


def grade_one(sub: Submission, ctx: Context, slot: int, content: str) -> dict:
    """Execute (unless --no-execute), collect, validate and score one submission; its work dir
    goes once its answers are read, unless --keep-work."""
    from grader.assessment.score import score_answers
    from grader.execution.execute import remove_workdir

    start = time.monotonic()
    exec_result, executed, runs, runs_summary = None, None, None, None
    stem = file_stem(sub.student)
    if ctx.no_execute:
        folder = None if sub.is_notebook else sub.path
        with stage("collecting answer files"):
            files, problems = collect_answers(folder, ctx.spec, search=True)
    else:
        workdir = ctx.out / ".work" / stem
        with stage("copying the submission"):
            remove_workdir(workdir)
            _remove(ctx.out / "executed" / f"{stem}.ipynb")
            workdir.mkdir(parents=True)
        try:
            record = [] if ctx.service is not None else None
            exec_result = _execute(sub, workdir, ctx, slot, record)
            collecting = time.monotonic()
            with stage("collecting the runs record"):
                served = record if ctx.service is not None and not ctx.service.could_not_start else None
                runs, runs_summary = runs_record(served, _get(exec_result, "reported_runs"))
            with stage("collecting the executed notebook"):
                executed = _keep_executed(exec_result, ctx.out, stem)
            with stage("collecting answer files"):
                files, problems = collect_answers(workdir, ctx.spec)
            timing = {**(_get(exec_result, "timing") or {}), "execute_s": _get(exec_result, "duration_s") or 0.0,
                      "collect_s": round(time.monotonic() - collecting, 3)}
        finally:
            if not ctx.keep_work:
                remove_workdir(workdir)
    scoring = time.monotonic()
    with stage("scoring"):
        status, reason = decide_status(exec_result, files, problems, no_execute=ctx.no_execute)
        scored = score_answers(ctx.spec, ctx.ref, files, hide=ctx.hide, runs=runs,
                               evidence_source=(runs_summary or {}).get("evidence"))
    result = _result(sub.student, status, reason, scored, content, executed,
                     time.monotonic() - start, problems, stored_answers(files))
    if not ctx.no_execute:
        result["timing"] = {**timing, "score_s": round(time.monotonic() - scoring, 3)}
        result["runs"], result["runs_summary"] = runs, runs_summary
    return result


def grade_or_fail(sub: Submission, ctx: Context, slot: int, content: str) -> dict:
    """The failure boundary around one student: any failure but a SetupError becomes their `error` result."""
    start = time.monotonic()
    try:
        return grade_one(sub, ctx, slot, content)
    except SetupError:
        raise
    except (UserError, StageError) as e:
        reason = str(e)
    except Exception as e:
        reason = f"grader failed while grading: {describe(e)}"
    return failed_result(sub, ctx, reason, content, time.monotonic() - start)


def failed_result(sub: Submission | str, ctx: Context, reason: str, content: str, duration: float) -> dict:
    """A student whose handling broke: status error, every question not answered. Never raises."""
    from grader.assessment.score import score_answers

    student = sub.student if isinstance(sub, Submission) else sub
    files = {name: "the submission could not be processed" for name in ctx.spec.answer_files}
    try:
        scored = score_answers(ctx.spec, ctx.ref, files, hide=ctx.hide)
    except Exception:
        scored = {"total": 0.0, "max": float(ctx.spec.max_points), "questions": {}, "review": False}
    return _result(student, "error", one_line(display(reason), 300), scored, content, None, duration, [],
                   stored_answers(files))


def stored_answers(files: dict) -> dict:
    """The answer files as plain JSON (answers as given, or why a file is unusable), kept in the store
    so a change of the spec or reference re-scores them without executing the notebook again."""
    out = {}
    for name, entry in files.items():
        if isinstance(entry, dict):
            out[name] = {k: a.raw for k, a in entry.items() if a.raw is not None}
        else:
            out[name] = entry
    return out


def _result(student, status, reason, scored, content, executed, duration, problems, answer_files) -> dict:
    raw = exact_hex(student)
    return {
        "student": display(student),
        **({"student_hex": raw} if raw else {}),
        "file": file_stem(student),
        "status": status,
        "reason": display(reason),
        "total": scored["total"],
        "max": scored["max"],
        "questions": scored["questions"],
        "review": scored["review"],
        "content_sha256": content,
        "executed": executed,
        "duration_s": round(max(0.0, duration), 3),
        "errors": [display(one_line(p, 300)) for p in problems],
        "answer_files": answer_files,
    }


def _execute(sub: Submission, workdir: Path, ctx: Context, slot: int, record: list | None):
    from grader.execution.execute import execute_notebook, prepare_workdir

    with stage("copying the submission"):
        notebook = prepare_workdir(sub.path, workdir, answer_files=ctx.spec.answer_files)
    kwargs = dict(limits=ctx.limits, data_dir=ctx.data_dir, preamble=ctx.spec.preamble,
                  sandbox=ctx.sandbox, slot=slot, seed=0, threads=ctx.threads, stop=ctx.stop,
                  data_cache=ctx.data_cache, font_cache=ctx.font_cache)
    try:
        with _training_session(ctx, sub.student, slot, record) as socket_path, stage("executing the notebook"):
            return execute_notebook(notebook, workdir, train_socket=socket_path, **kwargs)
    except UserError as e:
        raise SetupError(str(e), e.exit_code) from None


def _training_session(ctx: Context, student: str, slot: int, record: list | None):
    """This notebook's own socket to the training service, with its quota, recording its runs into `record`;
    a no-op without a service."""
    if ctx.service is None:
        return contextlib.nullcontext(None)
    from grader.execution import sandbox as sb
    from grader.service.server import Quota

    uid = sb.uid_for_slot(slot) if ctx.sandbox and sb.privileged() else None
    return ctx.service.session(student, Quota.from_limits(ctx.limits), uid=uid, record=record)


def _keep_executed(exec_result, out: Path, stem: str) -> str | None:
    """Copy the executed notebook to OUT/executed/<file stem>.ipynb; its path relative to OUT."""
    src = _get(exec_result, "executed")
    if not src or not Path(src).is_file():
        return None
    dest = out / "executed" / f"{stem}.ipynb"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(src, tmp, follow_symlinks=False)
    os.replace(tmp, dest)
    return dest.relative_to(out).as_posix()


def _get(obj, name):
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _remove(path: Path) -> None:
    try:
        remove_tree(path)
    except OSError:
        pass

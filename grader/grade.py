"""`labgrader grade`: every submission executed, validated and scored; gradebook, results, feedback.

One broken submission never stops the others: whatever goes wrong while handling a student
becomes that student's status and one-line reason. Finished students are stored at once
(grader/store.py), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from grader import __version__
from grader.errors import UserError
from grader.text import one_line
from grader.limits import Limits, limits_from_args
from grader.reference_io import reference_for
from grader.validate import parse_answers, read_answer_file, validate_answers

STATUSES = ("graded", "error", "timeout", "memory", "no-answers", "invalid-answers")
SKIP_NAMES = {"__MACOSX", "__pycache__"}


class SetupError(UserError):
    """The grader's own setup failed (no sandbox, no data): no submission can be graded, so stop."""


@dataclass(frozen=True)
class Submission:
    student: str
    path: Path

    @property
    def is_notebook(self) -> bool:
        return self.path.is_file()


@dataclass(frozen=True)
class Context:
    """Everything one student's grading needs; read-only, shared by the workers."""

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


# discovery -------------------------------------------------------------------------------------

def discover(root: Path) -> list[Submission]:
    """A folder per student (holding a notebook and maybe answer files) or a lone <student>.ipynb."""
    if not os.path.lexists(root):
        raise UserError(f"{root}: no such folder")
    if root.is_file() and root.suffix == ".ipynb":
        return [Submission(root.stem, root)]
    if not root.is_dir():
        raise UserError(f"{root}: is not a folder of submissions")
    subs = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.name in SKIP_NAMES or entry.is_symlink():
            continue
        if entry.is_dir():
            subs.append(Submission(entry.name, entry))
        elif entry.is_file() and entry.suffix == ".ipynb":
            subs.append(Submission(entry.stem, entry))
    names = [s.student for s in subs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"{root}: student {dupes[0]!r} has both a folder and a notebook; keep one")
    return subs


def submissions_root(root: Path, layout: str, out: Path, spec, say) -> Path:
    """Plain per-student folders as given; an LMS download (zip, Canvas, Moodle) unpacked into OUT/lms first."""
    if not os.path.lexists(root):
        raise UserError(f"{root}: no such folder")
    if layout == "folders" or (root.is_file() and root.suffix == ".ipynb"):
        return root
    from grader.lms_in import detect_layout, lms_workdir, materialize

    if layout == "auto" and root.is_dir() and detect_layout(root) == "folders":
        return root
    target, entries, refused = materialize(root, layout, lms_workdir(out), known_names=spec.answer_files)
    for r in refused:
        say(f"refused {r.entry}: {r.reason}")
    say(f"unpacked {len(entries)} submission(s) from {root} into {target}")
    return target


def resolve_data_dir(args) -> tuple[Path, str]:
    """The data notebooks read: --data-dir, else $LABGRADER_DATA, else the demo's synthetic data."""
    if getattr(args, "data_dir", None):
        return Path(args.data_dir), "--data-dir"
    if os.environ.get("LABGRADER_DATA"):
        return Path(os.environ["LABGRADER_DATA"]), "$LABGRADER_DATA"
    from reference.synth import demo_data_dir

    return Path(demo_data_dir()), "the bundled demo's synthetic data (set --data-dir or $LABGRADER_DATA for Fashion-MNIST)"


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
            data = read_answer_file(path)
        except UserError as e:
            files[name] = str(e)
            problems.append(str(e))
            continue
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
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
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
    if _get(exec_result, "status") != "ok" and cell is not None and f"cell {cell}" not in reason:
        reason = f"cell {cell}: {reason}" if reason else f"cell {cell}"
    return reason


def grade_one(sub: Submission, ctx: Context, slot: int, content: str) -> dict:
    """Execute (unless --no-execute), collect, validate and score one submission."""
    from grader.score import score_answers

    start = time.monotonic()
    exec_result, executed = None, None
    if ctx.no_execute:
        folder = None if sub.is_notebook else sub.path
        files, problems = collect_answers(folder, ctx.spec, search=True)
    else:
        workdir = ctx.out / ".work" / sub.student
        _remove(workdir)
        _remove(ctx.out / "executed" / f"{sub.student}.ipynb")
        workdir.mkdir(parents=True)
        exec_result = _execute(sub, workdir, ctx, slot)
        executed = _keep_executed(exec_result, ctx.out, sub.student)
        files, problems = collect_answers(workdir, ctx.spec)
    status, reason = decide_status(exec_result, files, problems, no_execute=ctx.no_execute)
    scored = score_answers(ctx.spec, ctx.ref, files, hide=ctx.hide)
    if status == "graded" and not ctx.no_execute:
        _remove(ctx.out / ".work" / sub.student)
    return _result(sub.student, status, reason, scored, content, executed,
                   time.monotonic() - start, problems)


def failed_result(sub: Submission, ctx: Context, reason: str, content: str, duration: float) -> dict:
    """A student whose handling broke: status error, every question not answered."""
    from grader.score import score_answers

    files = {name: "the submission could not be processed" for name in ctx.spec.answer_files}
    return _result(sub.student, "error", one_line(reason, 300), score_answers(ctx.spec, ctx.ref, files, hide=ctx.hide),
                   content, None, duration, [])


def _result(student, status, reason, scored, content, executed, duration, problems) -> dict:
    return {
        "student": student,
        "status": status,
        "reason": reason,
        "total": scored["total"],
        "max": scored["max"],
        "questions": scored["questions"],
        "review": scored["review"],
        "content_sha256": content,
        "executed": executed,
        "duration_s": round(max(0.0, duration), 3),
        "errors": [one_line(p, 300) for p in problems],
    }


def _execute(sub: Submission, workdir: Path, ctx: Context, slot: int):
    from grader.execute import execute_notebook, prepare_workdir

    notebook = prepare_workdir(sub.path, workdir, answer_files=ctx.spec.answer_files)
    kwargs = dict(limits=ctx.limits, data_dir=ctx.data_dir, preamble=ctx.spec.preamble,
                  sandbox=ctx.sandbox, slot=slot, seed=0, threads=ctx.threads, stop=ctx.stop)
    try:
        with _training_session(ctx, sub.student, slot) as socket_path:
            return execute_notebook(notebook, workdir, train_socket=socket_path, **kwargs)
    except UserError as e:
        raise SetupError(str(e), e.exit_code) from None


def _training_session(ctx: Context, student: str, slot: int):
    """This notebook's own socket to the training service, with its quota; a no-op without a service."""
    if ctx.service is None:
        return contextlib.nullcontext(None)
    from grader import sandbox as sb
    from grader.service.server import Quota

    uid = sb.uid_for_slot(slot) if ctx.sandbox and sb.privileged() else None
    return ctx.service.session(student, Quota(ctx.limits.train_runs, ctx.limits.train_epochs), uid=uid)


def _keep_executed(exec_result, out: Path, student: str) -> str | None:
    """Copy the executed notebook to OUT/executed/<student>.ipynb; its path relative to OUT."""
    src = _get(exec_result, "executed")
    if not src or not Path(src).is_file():
        return None
    dest = out / "executed" / f"{student}.ipynb"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(src, tmp, follow_symlinks=False)
    os.replace(tmp, dest)
    return dest.relative_to(out).as_posix()


def _get(obj, name):
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


# the command -----------------------------------------------------------------------------------

def grade_command(args) -> int:
    from reference.spec import load_spec
    from grader import report
    from grader.store import Store, content_sha256, options_sha256

    def say(line: str) -> None:
        print(f"labgrader: {line}", file=sys.stderr)

    jobs = int(getattr(args, "jobs", 1))
    if jobs < 1:
        raise UserError("-j/--jobs must be at least 1")
    executor = getattr(args, "executor", None) or "local"
    if executor == "dask" and not getattr(args, "scheduler", None):
        raise UserError("--executor dask needs --scheduler ADDRESS (the Dask scheduler, e.g. tcp://HOST:8786)")
    spec = load_spec(getattr(args, "spec", None))
    out = Path(args.out)
    root = submissions_root(Path(args.submissions), getattr(args, "layout", "auto") or "auto", out, spec, say)
    subs = discover(root)
    if not subs:
        raise UserError(f"{args.submissions}: no submissions found (expected one sub-folder or one <student>.ipynb per student)")
    ref = reference_for(getattr(args, "reference", None), spec, say)
    overrides = _load_overrides(args, spec, subs)
    limits = limits_from_args(args)
    no_execute = bool(getattr(args, "no_execute", False))
    data_dir = None
    if not no_execute and subs:
        data_dir, source = resolve_data_dir(args)
        if executor == "local" and not data_dir.is_dir():
            raise UserError(f"data dir {data_dir} ({source}) is not a folder")
        say(f"notebooks read their data from {data_dir} ({source})")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = Context(spec, ref, out, limits, data_dir, not getattr(args, "no_sandbox", False), no_execute,
                  bool(getattr(args, "hide_answers", False)), threads,
                  service_options=None if no_execute else _service_options(args, threads))
    options = {
        "labgrader_version": __version__, "spec_sha256": spec.sha256, "reference_sha256": ref.sha256,
        "no_execute": no_execute, "hide_answers": ctx.hide, "limits": limits.as_dict(),
        "sandbox": ctx.sandbox, "data_dir": str(data_dir) if data_dir else None,
    }
    options_key = options_sha256(options)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{out}: cannot create the output folder: {e.strerror or e}")
    store = Store(out)
    header = {
        "assignment": spec.assignment_id, "title": spec.title, "spec_sha256": spec.sha256,
        "reference": ref.summary(), "labgrader_version": __version__, "max": spec.max_points,
        "options": {"no_execute": no_execute, "hide_answers": ctx.hide, "sandbox": ctx.sandbox, "jobs": jobs, "executor": executor,
                    "data_dir": options["data_dir"], "limits": limits.as_dict()},
    }

    results: dict[str, dict] = {}
    contents = {sub.student: _content_or_none(content_sha256, sub.path) for sub in subs}
    todo: list[tuple[Submission, str]] = []
    for sub in subs:
        content = contents[sub.student]
        fresh = None if getattr(args, "force", False) or content is None else store.fresh(sub.student, content, options_key)
        if fresh is not None:
            results[sub.student] = fresh
        else:
            todo.append((sub, content or "0" * 64))
    if results:
        say(f"{len(results)} unchanged submission(s) already graded in {out / '.state'}; reusing them (--force regrades)")

    def publish() -> list[dict]:
        ordered = [results[s.student] for s in subs if s.student in results]
        shown = _apply_overrides(ordered, overrides, spec)
        report.write_outputs(out, {**header, "created": _now()}, shown, spec)
        return shown

    def finish(sub: Submission, content: str, result: dict, finished: bool) -> None:
        if finished:
            store.save(sub.student, content, options, result)
        else:
            store.discard(sub.student)
        results[sub.student] = result
        report.write_feedback(out, _apply_overrides([result], overrides, spec)[0], spec, ctx.hide, ref)
        publish()

    with _training_service(ctx, bool(todo) and executor == "local", say) as (ctx, service_summary):
        if executor == "dask":
            from grader.dask_exec import run_dask

            service_summary.update(run_dask(todo, ctx, args.scheduler, finish, done=len(results), total=len(subs), say=say))
        else:
            run_pool(todo, ctx, jobs, finish, done=len(results), total=len(subs))
    if service_summary:
        header["train_service"] = service_summary
    final = publish()
    graded_now = {sub.student for sub, _ in todo}
    for r in final:
        if r["student"] not in graded_now:
            report.write_feedback(out, r, spec, ctx.hide, ref)
    report.write_class_report(out, final, spec, ref)
    _print_summary(args, out, final, ref, len(todo), len(subs) - len(todo))
    return 0


def _service_options(args, threads: int):
    """The training service's settings, or None for --no-train-service. It trains with the notebooks'
    thread count, so a run it trains alone is bit for bit the notebook's own."""
    if getattr(args, "no_train_service", False):
        return None
    from grader.service.server import ServiceOptions

    return ServiceOptions(cache_dir=getattr(args, "train_cache", None) or os.environ.get("LABGRADER_TRAIN_CACHE"),
                          device=getattr(args, "device", None) or "auto", threads=threads)


@contextlib.contextmanager
def _training_service(ctx: Context, needed: bool, say):
    """-> (ctx with a started service, the summary dict filled in on exit); (ctx, {}) when off or idle."""
    summary: dict = {}
    if ctx.service_options is None or not needed:
        yield ctx, summary
        return
    from grader.service.server import TrainingService, say_summary

    service = TrainingService(ctx.service_options, ctx.data_dir)
    try:
        service.start()
    except UserError as e:
        raise SetupError(f"the training service cannot start: {e}", e.exit_code) from None
    say(f"training service on {service.describe()}; --no-train-service trains in each sandbox instead")
    try:
        yield dataclasses.replace(ctx, service=service), summary
    finally:
        service.close()
        summary.update(service.summary())
        say_summary(service, say)


def run_pool(todo: list[tuple[Submission, str]], ctx: Context, jobs: int, finish, *, done: int, total: int) -> None:
    """Grade `todo` on `jobs` workers, each with its own sandbox slot; finish() runs in this thread.

    finish(sub, content, result, finished) gets every student as soon as they are done; finished
    is False when the grader's own handling failed (reported as status error, retried next run).
    """
    from tqdm import tqdm

    slots: queue.Queue[int] = queue.Queue()
    for i in range(jobs):
        slots.put(i)

    def work(sub: Submission, content: str) -> tuple[dict, bool]:
        slot = slots.get()
        start = time.monotonic()
        try:
            return grade_one(sub, ctx, slot, content), True
        except SetupError:
            raise
        except UserError as e:
            return failed_result(sub, ctx, str(e), content, time.monotonic() - start), False
        except Exception as e:  # one submission's failure must never reach the others
            return failed_result(sub, ctx, f"the grader failed on this submission: {type(e).__name__}: {e}",
                                 content, time.monotonic() - start), False
        finally:
            slots.put(slot)

    bar = tqdm(total=total, initial=done, desc="grading", unit="submission", file=sys.stderr, dynamic_ncols=True)
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="grade")
    try:
        futures = {pool.submit(work, sub, content): (sub, content) for sub, content in todo}
        for future in as_completed(futures):
            sub, content = futures[future]
            result, finished = future.result()
            finish(sub, content, result, finished)
            bar.set_postfix_str(f"{sub.student}: {result['status']}", refresh=False)
            bar.update(1)
    except BaseException:
        ctx.stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown(wait=True)


def _content_or_none(fn, path: Path) -> str | None:
    try:
        return fn(path)
    except OSError:
        return None


def _load_overrides(args, spec, subs: list[Submission]):
    """Instructor overrides (grader/overrides.py), applied when reports are built, never stored."""
    path = getattr(args, "overrides", None)
    if not path:
        return None
    from grader.overrides import load_overrides

    return load_overrides(path, [s.student for s in subs], spec)


def _apply_overrides(results: list[dict], overrides, spec) -> list[dict]:
    if not overrides:
        return results
    from grader.overrides import apply_overrides

    return [apply_overrides(r, overrides, spec) for r in results]


def _print_summary(args, out: Path, results: list[dict], ref, graded_now: int, reused: int) -> None:
    from grader import report

    paths = {"gradebook": out / "grades.csv", "results": out / "results.json",
             "feedback": out / "feedback", "executed": out / "executed", "summary": out / "summary.html"}
    if getattr(args, "json", False):
        import json

        counts = {s: sum(r["status"] == s for r in results) for s in STATUSES}
        print(json.dumps({
            "out": str(out), **{k: str(v) for k, v in paths.items()},
            "reference": ref.summary(), "graded_now": graded_now, "reused": reused, "counts": counts,
            "students": [{k: r[k] for k in ("student", "status", "reason", "total", "max", "review")} for r in results],
        }, indent=2))
        return
    print(report.summary_table(results))
    print()
    print(f"gradebook: {paths['gradebook']}")
    print(f"results:   {paths['results']}")
    print(f"feedback:  {paths['feedback']}{os.sep} (Markdown and HTML per student)")
    print(f"summary:   {paths['summary']}")
    if any(r.get("executed") for r in results):
        print(f"executed:  {paths['executed']}{os.sep}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

"""`labgrader grade`: every submission executed, validated and scored; gradebook, results, feedback.

One broken submission never stops the others: whatever goes wrong while handling a student, in any
stage from hashing to writing their feedback, becomes that student's `error` status with a one-line
reason naming the stage, stored like any result. Finished students are stored at once
(grader/grading/store.py), so an interrupted run resumes where it stopped; the class report is
always written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from grader import __version__
from grader.common.errors import UserError
from grader.execution.limits import limits_from_args, notebook_threads, service_trainers
from grader.assessment.reference_io import reference_for
from grader.assessment.rescore import rescore
from grader.grading.executor import Executor
from grader.grading.pipeline import STATUSES, Context, StageError, checked_data_dir, failed_result, resolve_data_dir, stage
from grader.grading.submissions import Submission, submissions


# the command -----------------------------------------------------------------------------------

def grade_command(args) -> int:
    from reference.spec import load_spec
    from grader.reports import report
    from grader.grading.store import Store, check_result, content_sha256, options_sha256

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
    _writable(out)
    subs, refused = submissions(Path(args.submissions), getattr(args, "layout", "auto") or "auto", out, spec, say)
    if not subs:
        raise UserError(f"{args.submissions}: no submissions found (expected one sub-folder or one <student>.ipynb per student)")
    ref = reference_for(getattr(args, "reference", None), spec, say)
    overrides = _load_overrides(args, spec, subs)
    limits = limits_from_args(args)
    no_execute = bool(getattr(args, "no_execute", False))
    data_dir = None
    if not no_execute and subs:
        data_dir, source = checked_data_dir(args) if executor == "local" else resolve_data_dir(args)
        say(f"notebooks read their data from {data_dir} ({source})")
    threads = notebook_threads(jobs)
    ctx = Context(spec, ref, out, limits, data_dir, not getattr(args, "no_sandbox", False), no_execute,
                  bool(getattr(args, "hide_answers", False)), threads,
                  service_options=None if no_execute else _service_options(args),
                  keep_work=bool(getattr(args, "keep_work", False)))
    options = execution_options(spec, no_execute, limits, ctx.sandbox, data_dir)
    options_key = options_sha256(options)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{out}: cannot create the output folder: {e.strerror or e}")
    store = Store(out)
    header = {
        "assignment": spec.assignment_id, "title": spec.title, "spec_sha256": spec.sha256, "spec": str(spec.path),
        "reference": ref.summary(), "labgrader_version": __version__, "max": spec.max_points,
        "options": {"no_execute": no_execute, "hide_answers": ctx.hide, "sandbox": ctx.sandbox, "jobs": jobs, "executor": executor,
                    "data_dir": options["data_dir"], "limits": limits.as_dict()},
    }

    results: dict[str, dict] = {}
    todo: list[tuple[Submission, str]] = []
    unhashed: list[tuple[Submission, str]] = []
    for sub in subs:
        try:
            with stage("hashing the submission"):
                content = content_sha256(sub.path)
        except (StageError, UserError) as e:
            unhashed.append((sub, str(e)))
            continue
        fresh = None if getattr(args, "force", False) else store.fresh(sub.student, content, options_key)
        if fresh is not None:
            results[sub.student] = rescore(fresh, spec, ref, hide=ctx.hide)
        else:
            todo.append((sub, content))
    if results:
        say(f"{len(results)} unchanged submission(s) already graded in {out / '.state'}; reusing them (--force regrades)")

    def publish() -> list[dict]:
        ordered = [results[s.student] for s in subs if s.student in results]
        shown = _apply_overrides(ordered, overrides, spec)
        report.write_outputs(out, {**header, "created": _now()}, shown, spec)
        return shown

    def fail(sub: Submission, content: str, error: Exception, duration: float) -> dict:
        return failed_result(sub, ctx, str(error), content, duration)

    def keep(sub: Submission, content: str, result: dict, finished: bool) -> dict:
        """Check and store one result; a failure here becomes the student's stored error instead."""
        try:
            with stage("storing the result"):
                check_result(result)
                if finished:
                    store.save(sub.student, content, options, result)
                else:
                    store.discard(sub.student)
            return result
        except (StageError, UserError) as e:
            failed = fail(sub, content, e, result.get("duration_s", 0.0) if isinstance(result, dict) else 0.0)
            with contextlib.suppress(Exception):
                store.save(sub.student, content, options, failed)
            return failed

    def feedback(sub: Submission, content: str, result: dict) -> dict:
        try:
            with stage("writing feedback"):
                report.write_feedback(out, _apply_overrides([result], overrides, spec)[0], spec, ctx.hide, ref)
            return result
        except (StageError, UserError) as e:
            failed = keep(sub, content, fail(sub, content, e, result.get("duration_s", 0.0)), True)
            with contextlib.suppress(Exception):
                report.write_feedback(out, failed, spec, ctx.hide, None)
            return failed

    def finish(sub: Submission, content: str, result: dict, finished: bool) -> None:
        result = keep(sub, content, result, finished)
        results[sub.student] = feedback(sub, content, result)
        publish()

    for sub, why in unhashed:
        finish(sub, "0" * 64, fail(sub, "0" * 64, UserError(why), 0.0), False)

    if todo and data_dir is not None:
        data_cache, font_cache = _sandbox_caches(args, data_dir, executor, say)
        ctx = dataclasses.replace(ctx, data_cache=data_cache, font_cache=font_cache)
    runner = Executor(executor, jobs, getattr(args, "scheduler", None))
    with _training_service(ctx, bool(todo) and runner.needs_local_service(), say) as (ctx, service_summary):
        service_summary.update(runner.run(todo, ctx, finish, done=len(results), total=len(subs), say=say))
    if service_summary:
        header["train_service"] = service_summary
    graded_now = {sub.student for sub, _ in todo} | {sub.student for sub, _ in unhashed}
    for sub in subs:
        if sub.student in results and sub.student not in graded_now:
            results[sub.student] = feedback(sub, results[sub.student].get("content_sha256", "0" * 64), results[sub.student])
    final = publish()
    try:
        with stage("writing the class report"):
            report.write_class_report(out, final, spec, ref)
    except (StageError, UserError) as e:
        from grader.reports.summary import class_summary

        say(f"{e}; the students whose results break it get status error")
        for sub in [s for s in subs if s.student in results]:
            r = results[sub.student]
            try:
                with stage("writing the class report"):
                    class_summary(_apply_overrides([r], overrides, spec), spec, ref)
            except (StageError, UserError) as bad:
                content = r.get("content_sha256", "0" * 64)
                results[sub.student] = keep(sub, content, fail(sub, content, bad, 0.0), True)
        final = publish()
        report.write_class_report(out, final, spec, ref)
    _print_summary(args, out, final, ref, len(todo), len(subs) - len(todo), refused)
    return 0


def execution_options(spec, no_execute: bool, limits, sandbox: bool, data_dir) -> dict:
    """What shapes a notebook's execution, hashed into the store's key. Scoring (the spec's rules and
    rubric, the reference, --hide-answers) is not in it: stored answers are re-scored instead."""
    return {
        "labgrader_version": __version__, "answer_files": list(spec.answer_files), "preamble": list(spec.preamble),
        "no_execute": no_execute, "limits": limits.as_dict(), "sandbox": sandbox,
        "data_dir": str(data_dir) if data_dir else None,
    }


def _sandbox_caches(args, data_dir: Path, executor: str, say) -> tuple[Path | None, Path | None]:
    """The decoded data cache and the font list, built or checked here once for the whole run.
    Dask workers bind their own; a data dir that only the workers have gets no data cache."""
    if getattr(args, "no_data_cache", False):
        say("--no-data-cache: each notebook decodes the gzip files and lists matplotlib's fonts itself")
        return None, None
    from grader.grading.caches import prepare_caches

    decode = executor == "local" or data_dir.is_dir()
    if not decode:
        say(f"the data dir {data_dir} is not on this machine, so the Dask workers decode it in each sandbox")
    return prepare_caches(data_dir, getattr(args, "data_cache", None), data=decode, say=say)


def _service_options(args):
    """The training service's settings, or None for --no-train-service. It trains with every core (at most
    $OMP_NUM_THREADS) whatever -j is: the notebooks are waiting while it trains, and its numbers (and its
    memo) stay the same at any -j. A run it trains alone is bit for bit the kit's loop at that thread count:
    a notebook graded alone (-j 1) computes the same; at -j 2 the notebook's own loop would round differently.
    With -j 2 and more, two runs of different sessions train side by side (limits.service_trainers)."""
    if getattr(args, "no_train_service", False):
        return None
    from grader.service.server import ServiceOptions

    threads, trainers = service_trainers(int(getattr(args, "jobs", 1) or 1))
    return ServiceOptions(cache_dir=getattr(args, "train_cache", None) or os.environ.get("LABGRADER_TRAIN_CACHE"),
                          device=getattr(args, "device", None) or "auto", threads=threads, trainers=trainers)


@contextlib.contextmanager
def _training_service(ctx: Context, needed: bool, say):
    """-> (ctx with a started service, the summary dict filled in on exit); (ctx, {}) when off or idle."""
    summary: dict = {}
    if ctx.service_options is None or not needed:
        yield ctx, summary
        return
    from grader.service.server import TrainingService, say_summary

    options = dataclasses.replace(ctx.service_options, data_cache=str(ctx.data_cache) if ctx.data_cache else None)
    service = TrainingService(options, ctx.data_dir, say)

    def ready(failed):
        if failed:
            say(f"the training service did not start ({failed}); every notebook trains in its sandbox")
        else:
            say(f"training service on {service.describe()}; --no-train-service trains in each sandbox instead")

    service.start(wait=False, on_ready=ready)
    try:
        yield dataclasses.replace(ctx, service=service), summary
    finally:
        service.close()
        if service.started:
            summary.update(service.summary())
            say_summary(service, say)


def _load_overrides(args, spec, subs: list[Submission]):
    """Instructor overrides (grader/overrides.py), applied when reports are built, never stored."""
    path = getattr(args, "overrides", None)
    if not path:
        return None
    from grader.assessment.overrides import load_overrides

    from grader.common.names import display

    return load_overrides(path, [display(s.student) for s in subs], spec)


def _writable(out: Path) -> None:
    """An OUT that exists but cannot be written stops the run before any notebook does: otherwise every
    student would end as an error for feedback the grader could not write."""
    import tempfile

    if not out.is_dir():
        return
    try:
        with tempfile.NamedTemporaryFile(dir=out, prefix=".labgrader-probe-"):
            pass
    except OSError as e:
        raise UserError(f"{out}: cannot write into the output folder: {e.strerror or e}")


def _apply_overrides(results: list[dict], overrides, spec) -> list[dict]:
    if not overrides:
        return results
    from grader.assessment.overrides import apply_overrides

    return [apply_overrides(r, overrides, spec) for r in results]


def _print_summary(args, out: Path, results: list[dict], ref, graded_now: int, reused: int, refused=()) -> None:
    """The gradebook's paths and counts; entries refused as submissions (a symlink, OUT itself, a hostile
    zip entry) are listed in --json too, for a script that never reads stderr."""
    from grader.reports import report

    paths = {"gradebook": out / "grades.csv", "results": out / "results.json",
             "feedback": out / "feedback", "executed": out / "executed", "summary": out / "summary.html"}
    if getattr(args, "json", False):
        import json

        from grader.common.names import display

        counts = {s: sum(r["status"] == s for r in results) for s in STATUSES}
        print(json.dumps({
            "out": str(out), **{k: str(v) for k, v in paths.items()},
            "reference": ref.summary(), "graded_now": graded_now, "reused": reused, "counts": counts,
            "students": [{k: r[k] for k in ("student", "status", "reason", "total", "max", "review")} for r in results],
            "refused": [{"entry": display(r.entry), "reason": r.reason} for r in refused],
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

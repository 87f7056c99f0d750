"""`grade --executor dask`: each submission graded as one task on a Dask distributed cluster.

Workers need not share the host's filesystem: a submission travels to its worker as bytes, and
its result and executed notebook travel back, so the gradebook is written here exactly as a local
run writes it. What stays on each worker: the data dir (same path everywhere), bubblewrap, the
sandbox uids and the training service. A task whose worker dies is run again elsewhere; whatever
else goes wrong with one task becomes that student's failed result, never the others'.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import io
import os
import queue
import shutil
import stat
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from dataclasses import fields
from pathlib import Path, PurePosixPath

from grader import __version__
from grader.common.atomic import write_bytes_atomic
from grader.common.errors import UserError
from grader.common.names import file_stem, terminal
from grader.common.text import one_line
from grader.common.walk import walk
from grader.execution.limits import notebook_threads, service_trainers
from grader.execution.slots import claim_slots

try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # run_dask says how to install it
    WorkerPlugin = object

CONNECT_TIMEOUT_S = 10.0
RETRIES = 2
LOCAL_ONLY = ("out", "stop", "service")
CLOSE_WAIT_S = 60.0
INSTALL = "pip install 'labgrader[dask]'"


# the client ------------------------------------------------------------------------------------

def run_dask(todo, ctx, scheduler: str, finish, *, done: int, total: int, say) -> dict:
    """Grade `todo` on the cluster at `scheduler`; finish() runs in this thread, as with run_pool.

    finish(sub, content, result, finished) gets every student as soon as they are done; finished
    is False when the grader's handling failed (a lost task, a worker-side crash).
    -> what the workers' training services did, summed ({} when none ran).
    """
    if not todo:
        return {}
    distributed = _distributed()
    from tqdm import tqdm

    client = _connect(distributed, scheduler)
    plugin = f"labgrader-{uuid.uuid4().hex[:12]}"
    futures: dict = {}
    bar = None
    try:
        _preflight(client, ctx, scheduler, say)
        client.register_plugin(GraderPlugin(), name=plugin)
        job = portable_context(ctx)
        bar = tqdm(total=total, initial=done, desc="grading", unit="submission", file=sys.stderr, dynamic_ncols=True)

        def settle(sub, content, result, finished):
            finish(sub, content, result, finished)
            bar.set_postfix_str(f"{terminal(sub.student)}: {result['status']}", refresh=False)
            bar.update(1)

        for sub, content in todo:
            start = time.monotonic()
            try:
                packed = pack_submission(sub.path)
            except OSError as e:
                reason = f"cannot read the submission: {e.strerror or e}"
                settle(sub, content, _failed(sub, ctx, reason, content, time.monotonic() - start), False)
                continue
            future = client.submit(grade_task, plugin, job, sub.student, packed, content,
                                   key=(plugin, sub.student), pure=False, retries=RETRIES)
            futures[future] = (sub, content, start)
        for future in distributed.as_completed(list(futures), loop=client.loop):
            sub, content, start = futures.pop(future)
            settle(sub, content, *_collect(future, sub, content, start, ctx, distributed))
            future.release()
        return _service_summary(client, plugin, say)
    except BaseException:
        _cancel(client, list(futures))
        raise
    finally:
        if bar is not None:
            bar.close()
        _forget(client, plugin)
        _close(client)


def _distributed():
    try:
        import distributed
    except ImportError:
        raise UserError(f"--executor dask needs Dask distributed, which is not installed: {INSTALL}") from None
    return distributed


def _connect(distributed, address: str):
    try:
        return distributed.Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except Exception as e:
        raise UserError(f"cannot reach the Dask scheduler at {address}: {one_line(e, 200)}") from None


def _preflight(client, ctx, scheduler: str, say) -> None:
    """Fail before grading when a worker lacks labgrader, the sandbox or the data dir."""
    from grader.grading.pipeline import SetupError

    try:
        facts = client.run(worker_facts, ctx.data_dir, ctx.sandbox and not ctx.no_execute)
    except Exception as e:
        raise UserError(f"a worker of the Dask scheduler at {scheduler} cannot run labgrader "
                        f"({type(e).__name__}: {one_line(e, 160)}); install labgrader on every worker") from None
    for address, (version, problem) in sorted(facts.items()):
        if version != __version__:
            raise UserError(f"Dask worker {address} has labgrader {version}, this is {__version__}: install the same version everywhere")
        if problem:
            raise SetupError(f"Dask worker {address}: {problem}")
    threads = sum(client.nthreads().values())
    if not facts:
        say(f"the Dask scheduler at {scheduler} has no workers yet; waiting for one (dask worker {scheduler})")
    else:
        say(f"grading on the Dask cluster at {scheduler}: {len(facts)} worker(s), {threads} thread(s)")


def portable_context(ctx) -> dict:
    """The Context's fields a worker can receive; the rest are made on the worker."""
    return {f.name: getattr(ctx, f.name) for f in fields(ctx) if f.name not in LOCAL_ONLY}


def _collect(future, sub, content, start: float, ctx, distributed) -> tuple[dict, bool]:
    """One finished future -> (result, finished); a SetupError from a worker stops the run."""
    from grader.grading.pipeline import SetupError

    try:
        outcome = future.result()
    except distributed.KilledWorker as e:
        reason = (f"its Dask worker died {getattr(e, 'allowed_failures', 0) + 1} times while grading it (last: "
                  f"{getattr(getattr(e, 'last_worker', None), 'address', 'unknown')}); see the worker logs")
        return _failed(sub, ctx, reason, content, time.monotonic() - start), False
    except (Exception, asyncio.CancelledError, concurrent.futures.CancelledError) as e:
        reason = f"the Dask task failed: {type(e).__name__}: {e}" if str(e) else f"the Dask task failed: {type(e).__name__}"
        return _failed(sub, ctx, reason, content, time.monotonic() - start), False
    if outcome["kind"] == "setup":
        raise SetupError(outcome["reason"], outcome["exit_code"])
    if outcome["kind"] == "failed":
        return _failed(sub, ctx, outcome["reason"], content, outcome["duration_s"]), False
    result = outcome["result"]
    if not ctx.no_execute:
        result["executed"] = _keep_executed(ctx, sub.student, outcome["executed"])
    return result, True


def _failed(sub, ctx, reason: str, content: str, duration: float) -> dict:
    from grader.grading.pipeline import failed_result

    if not ctx.no_execute:
        _keep_executed(ctx, sub.student, None)
    return failed_result(sub, ctx, reason, content, duration)


def _keep_executed(ctx, student: str, data: bytes | None) -> str | None:
    """OUT/executed/<file stem>.ipynb as a local run leaves it: the new notebook, or none at all."""
    dest = ctx.out / "executed" / f"{file_stem(student)}.ipynb"
    if data is None:
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        return None
    write_bytes_atomic(dest, data)
    return dest.relative_to(ctx.out).as_posix()


def _service_summary(client, plugin: str, say) -> dict:
    """The workers' training-service summaries: counts (failures of the services' processes too) summed over
    workers, threads and trainers the fewest any worker had."""
    try:
        per_worker = [s for s in client.run(worker_service_summary, plugin).values() if s]
    except Exception:
        return {}
    if not per_worker:
        return {}
    total = {k: sum(s[k] for s in per_worker) for k in ("trained", "batches", "from_memo", "joined", "abandoned", "refused")}
    total["largest_batch"] = max(s["largest_batch"] for s in per_worker)
    for k in ("threads", "trainers"):
        total[k] = min(s.get(k) or 1 for s in per_worker)
    total["process"] = all(s.get("process", False) for s in per_worker)
    if total["process"]:
        for k in ("failures", "restarts"):
            total[k] = sum(s.get(k, 0) for s in per_worker)
    for k in ("device", "data", "memo_dir"):
        total[k] = ", ".join(sorted({str(s[k]) for s in per_worker}))
    sources = {s.get("data_from") for s in per_worker}
    if len(sources) == 1 and None not in sources:
        total["data_from"] = sources.pop()
    say(f"training services on {len(per_worker)} Dask worker(s): {total['trained']} run(s) trained, "
        f"{total['from_memo']} answered from the memo, {total['joined']} joined, {total['refused']} refused")
    return total


def worker_service_summary(plugin: str, dask_worker=None) -> dict | None:
    state = dask_worker.plugins.get(plugin) if dask_worker is not None else None
    service = getattr(state, "service", None)
    return service.summary() if service is not None else None


def _cancel(client, futures: list) -> None:
    try:
        client.cancel(futures, force=True)
    except Exception:
        pass


def _forget(client, plugin: str) -> None:
    """Removing the plugin stops this run's sandboxes still running and closes its services."""
    try:
        client.unregister_worker_plugin(plugin)
    except Exception:
        pass


def _close(client) -> None:
    try:
        client.close(timeout=10)
    except Exception:
        pass


# submissions as bytes ---------------------------------------------------------------------------

def pack_submission(path: Path) -> dict:
    """A notebook as its bytes; a folder as a tar.gz of what a local run would copy from it.

    Links are resolved here as grader/execute.py resolves them: to a file inside the
    submission they become that file, anywhere else they are left out.
    """
    path = Path(path)
    if path.is_file():
        return {"kind": "notebook", "name": path.name, "data": path.read_bytes()}
    root = path.resolve()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6, dereference=True) as tar:
        for dirpath, dirnames, filenames in walk(path):
            here = Path(dirpath)
            rel = here.relative_to(path)
            dirnames[:] = sorted(d for d in dirnames if not (here / d).is_symlink())
            for name in dirnames:
                tar.add(here / name, arcname=(rel / name).as_posix(), recursive=False)
            for name in sorted(filenames):
                source = _regular_inside(here / name, root)
                if source is not None:
                    tar.add(source, arcname=(rel / name).as_posix(), recursive=False)
    return {"kind": "folder", "name": path.name, "data": buf.getvalue()}


def _regular_inside(path: Path, root: Path) -> Path | None:
    try:
        real = path.resolve(strict=True)
        real.relative_to(root)
        return real if stat.S_ISREG(real.stat().st_mode) else None
    except (OSError, RuntimeError, ValueError):
        return None


def unpack_submission(packed: dict, dest: Path) -> Path:
    """Write a packed submission under the empty folder dest; -> the notebook or folder to grade."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / _plain_name(packed["name"])
    if packed["kind"] == "notebook":
        target.write_bytes(packed["data"])
        return target
    target.mkdir()
    with tarfile.open(fileobj=io.BytesIO(packed["data"]), mode="r:gz") as tar:
        for member in tar:
            rel = PurePosixPath(member.name)
            if rel.is_absolute() or ".." in rel.parts or not rel.parts:
                continue
            out = target.joinpath(*rel.parts)
            if member.isdir():
                out.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                out.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(out, "xb") as dst:
                    shutil.copyfileobj(src, dst)
    return target


def _plain_name(name: str) -> str:
    name = PurePosixPath(name).name
    return name if name not in ("", ".", "..") else "submission"


# the worker ------------------------------------------------------------------------------------

def worker_facts(data_dir, sandbox: bool) -> tuple[str, str | None]:
    """(labgrader version, why this worker cannot grade or None); run on each worker."""
    if data_dir is not None and not Path(data_dir).is_dir():
        return __version__, (f"data dir {data_dir} does not exist on this worker: "
                             "every worker needs the data at the same path (--data-dir)")
    if sandbox:
        from grader.execution.sandbox import sandbox_problem

        return __version__, sandbox_problem()
    return __version__, None


def grade_task(plugin: str, job: dict, student: str, packed: dict, content: str) -> dict:
    """The Dask task: grade one packed submission with this worker's plugin."""
    from distributed import get_worker

    return get_worker().plugins[plugin].grade(job, student, packed, content)


class GraderPlugin(WorkerPlugin):
    """One run's state on one worker: its sandbox slots, its running tasks, its training service.

    Slots are claimed with a lock file per slot, so worker processes sharing a host never give
    two notebooks the same sandbox uid; the locks go when the worker process does.
    """

    def setup(self, worker) -> None:
        self.address = worker.address
        self.scratch = worker.local_directory
        nthreads = max(1, int(worker.state.nthreads))
        self.nthreads, self.threads = nthreads, notebook_threads(nthreads)
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.running: set[threading.Event] = set()
        self.checked: dict = {}
        self.service = None
        self.service_lock = threading.Lock()
        self.caches: dict = {}
        self.caches_lock = threading.Lock()
        self.slots: queue.Queue[int] = queue.Queue()
        self.claims: list[int] = []
        self.problem = None
        try:
            for slot, fd in claim_slots(nthreads):
                self.claims.append(fd)
                self.slots.put(slot)
        except OSError as e:
            self.problem = f"no sandbox slot could be claimed ({e.strerror or e})"

    async def teardown(self, worker) -> None:
        with self.lock:
            for stop in self.running:
                stop.set()
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self.idle:
            self.idle.wait_for(lambda: not self.running, timeout=CLOSE_WAIT_S)
        with self.service_lock:
            service, self.service = self.service, None
        if service is not None:
            try:
                service.close()
            except Exception:
                pass
        for fd in self.claims:
            os.close(fd)
        self.claims = []

    def grade(self, job: dict, student: str, packed: dict, content: str) -> dict:
        from grader.grading.pipeline import SetupError, grade_or_fail
        from grader.grading.submissions import Submission

        start = time.monotonic()
        problem = self.problem or self._check(job)
        if problem:
            return {"kind": "setup", "reason": f"Dask worker {self.address}: {problem}", "exit_code": 2}
        stop = threading.Event()
        with self.lock:
            self.running.add(stop)
        slot = self.slots.get()
        try:
            with tempfile.TemporaryDirectory(prefix="labgrader-", dir=self.scratch, ignore_cleanup_errors=True) as tmp:
                sub = Submission(student, unpack_submission(packed, Path(tmp) / "in"))
                ctx = self._context(job, Path(tmp) / "out", stop)
                result = grade_or_fail(sub, ctx, slot, content)
                executed = (ctx.out / result["executed"]).read_bytes() if result.get("executed") else None
                return {"kind": "done", "result": result, "executed": executed}
        except SetupError as e:
            return {"kind": "setup", "reason": f"Dask worker {self.address}: {e}", "exit_code": e.exit_code}
        except UserError as e:
            return {"kind": "failed", "reason": str(e), "duration_s": time.monotonic() - start}
        except Exception as e:
            from grader.grading.pipeline import describe

            return {"kind": "failed", "reason": f"grader failed while grading: {describe(e)}",
                    "duration_s": time.monotonic() - start}
        finally:
            self.slots.put(slot)
            with self.idle:
                self.running.discard(stop)
                self.idle.notify_all()

    def _check(self, job: dict) -> str | None:
        key = (str(job.get("data_dir")), bool(job.get("sandbox")) and not job.get("no_execute"))
        if key not in self.checked:
            self.checked[key] = worker_facts(job.get("data_dir"), key[1])[1]
        return self.checked[key]

    def _context(self, job: dict, out: Path, stop: threading.Event):
        from grader.grading.pipeline import Context, SetupError

        local = {"out": out, "stop": stop, "threads": self.threads, **self._caches(job)}
        try:
            local["service"] = self._service(job.get("service_options"), job.get("data_dir"))
        except Exception as e:
            raise SetupError(f"the training service did not start: {one_line(e, 200)}") from None
        return Context(**{**job, **local})

    def _caches(self, job: dict) -> dict:
        """This worker's own decoded data cache and font list, bound once per worker process in the
        folders the client's paths name (the client's own files may not be on this machine)."""
        data_cache, font_cache = job.get("data_cache"), job.get("font_cache")
        if data_cache is None and font_cache is None:
            return {}
        key = (str(job.get("data_dir")), str(data_cache), str(font_cache))
        with self.caches_lock:
            if key not in self.caches:
                from grader.grading.caches import prepare_caches

                root = Path(data_cache).parent if data_cache is not None else Path(font_cache).parent
                found = prepare_caches(job.get("data_dir"), root, data=data_cache is not None,
                                       say=lambda line: print(f"labgrader (worker {self.address}): {line}", file=sys.stderr))
                self.caches[key] = {"data_cache": found[0], "font_cache": found[1] if font_cache is not None else None}
            return self.caches[key]

    def _service(self, options, data_dir):
        """This worker's training service, started on first use, closed in teardown."""
        if options is None:
            return None
        with self.service_lock:
            if self.service is None:
                from grader.service.server import TrainingService

                trainers = service_trainers(self.nthreads)[1]
                service = TrainingService(dataclasses.replace(options, threads=self.threads, trainers=trainers), data_dir)
                service.start()
                self.service = service
            return self.service



"""The local executor: a thread pool of `jobs` workers, each with its own sandbox slot."""

from __future__ import annotations

import os
import queue
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed

from grader.common.errors import UserError
from grader.common.names import terminal
from grader.execution.slots import claim_slots
from grader.grading.pipeline import Context, grade_or_fail
from grader.grading.submissions import Submission


def run_pool(todo: list[tuple[Submission, str]], ctx: Context, jobs: int, finish, *, done: int, total: int) -> None:
    """Grade `todo` on `jobs` workers, each with its own sandbox slot; finish() runs in this thread.

    finish(sub, content, result, finished) gets every student as soon as they are done; whatever
    failed while grading one becomes their `error` result (grade_or_fail), stored like any other.
    """
    from tqdm import tqdm

    try:
        claims = claim_slots(jobs)
    except OSError as e:
        raise UserError(f"no sandbox slot could be claimed ({e.strerror or e})")
    slots: queue.Queue[int] = queue.Queue()
    for slot, _fd in claims:
        slots.put(slot)

    def work(sub: Submission, content: str) -> tuple[dict, bool]:
        slot = slots.get()
        try:
            return grade_or_fail(sub, ctx, slot, content), True
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
            bar.set_postfix_str(f"{terminal(sub.student)}: {result['status']}", refresh=False)
            bar.update(1)
    except BaseException:
        ctx.stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        bar.close()
        pool.shutdown(wait=True)
        for _slot, fd in claims:
            os.close(fd)

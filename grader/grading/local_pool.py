"""The local executor: a thread pool of `jobs` workers, each with its own sandbox slot."""

from __future__ import annotations

import queue
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from grader.common.errors import UserError
from grader.grading.pipeline import Context, SetupError, failed_result, grade_one
from grader.grading.submissions import Submission


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

"""One interface over the ways a class is run: the local pool or a Dask cluster.

`grade` picks one by name and hands it the work; neither executor knows about `grade`.
"""

from __future__ import annotations

from dataclasses import dataclass

EXECUTORS = ("local", "dask")


@dataclass(frozen=True)
class Executor:
    name: str = "local"
    jobs: int = 1
    scheduler: str | None = None

    def needs_local_service(self) -> bool:
        """The local pool shares one training service in this process; Dask workers start their own."""
        return self.name == "local"

    def run(self, todo, ctx, finish, *, done: int, total: int, say) -> dict:
        """Grade `todo` [(Submission, content sha)], calling finish(sub, content, result, finished) per student
        in this thread; -> the summed training-service summary of remote workers ({} for the local pool)."""
        if self.name == "dask":
            from grader.grading.dask_exec import run_dask

            return run_dask(todo, ctx, self.scheduler, finish, done=done, total=total, say=say)
        from grader.grading.local_pool import run_pool

        run_pool(todo, ctx, self.jobs, finish, done=done, total=total)
        return {}

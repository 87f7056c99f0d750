"""What a grading run prepares once for all its sandboxes: the decoded data cache, matplotlib's font list.

Both are built (or checked) by the trusted grader before any notebook runs, once per `grade` run
on the local machine and once per Dask worker process. Neither is needed: one that cannot be
made is said in one line and the notebooks do without it.
"""

from __future__ import annotations

from pathlib import Path

from grader.common.errors import UserError
from grader.common.text import one_line
from grader.execution import fontcache
from reference import datacache


def prepare_caches(data_dir, root, *, data: bool, say) -> tuple[Path | None, Path | None]:
    """-> (the verified decoded data folder, the font list's folder); None for either that is off or failed.

    data=False (--no-data-cache) leaves the data cache alone; root None is labgrader's cache folder.
    """
    root = datacache.resolve_root(root)
    data_cache = font_cache = None
    done = []
    if data and data_dir is not None:
        try:
            data_cache, how = datacache.prepare(data_dir, root, say)
            done.append(f"decoded data {data_cache} ({how})")
        except (datacache.CacheProblem, OSError, UserError) as e:
            say(f"no decoded data cache in {root}: {_reason(e)}; each notebook decodes the data files itself")
    try:
        font_cache, how = fontcache.prepare(root)
        done.append(f"matplotlib's font list ({how})")
    except (fontcache.FontCacheProblem, OSError) as e:
        say(f"no matplotlib font list in {root}: {_reason(e)}; each notebook lists the fonts itself")
    if done:
        tail = "; --no-data-cache decodes the data in each sandbox instead" if data_cache else ""
        say(f"sandboxes start from {' and '.join(done)}{tail}")
    return data_cache, font_cache


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return one_line(f"{e.strerror}: {e.filename}" if e.filename else e.strerror, 200)
    return one_line(str(e), 200) or type(e).__name__

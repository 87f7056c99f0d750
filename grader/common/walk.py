"""Folder walks and removals that never recurse, so a student's 10,000-deep folder chain is just a long loop.

Python 3.11's os.walk, shutil.rmtree and Path.rglob recurse once per level and raise
RecursionError on a deep enough chain; a submission decides that depth, so every walk over
student files goes through here.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def walk(top: str | os.PathLike):
    """os.walk(top, topdown=True, followlinks=False) with an explicit stack.

    Yields (dirpath, dirnames, filenames) like os.walk; pruning dirnames in place works as
    there. Links to folders are listed in dirnames (as os.walk does) but never entered;
    unreadable folders are skipped.
    """
    stack = [os.fspath(top)]
    while stack:
        here = stack.pop()
        try:
            entries = list(os.scandir(here))
        except OSError:
            continue
        dirnames, filenames = [], []
        for e in entries:
            try:
                is_dir = e.is_dir()
            except OSError:
                is_dir = False
            (dirnames if is_dir else filenames).append(e.name)
        yield here, dirnames, filenames
        for name in reversed(dirnames):
            path = os.path.join(here, name)
            if not os.path.islink(path):
                stack.append(path)


def remove_tree(path: str | os.PathLike) -> None:
    """rm -rf without recursion, without following links and without long paths: each folder is
    opened relative to its parent, so a chain past PATH_MAX goes too. Missing is fine; other errors
    raise OSError."""
    path = os.fspath(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    _writable(path)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    fd = os.open(path, flags)
    names: list[str] = []
    try:
        while True:
            with os.scandir(fd) as it:
                entries = list(it)
            sub = None
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    sub = sub or entry.name
                else:
                    os.unlink(entry.name, dir_fd=fd)
            if sub is not None:
                _writable(sub, fd)
                child = os.open(sub, flags, dir_fd=fd)
                os.close(fd)
                fd = child
                names.append(sub)
                continue
            if not names:
                break
            parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = parent
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)


def rglob_files(top: str | os.PathLike, suffix: str) -> list[Path]:
    """Regular files below top whose name ends with suffix, without recursion or following links."""
    found = []
    for here, _dirnames, filenames in walk(top):
        for name in filenames:
            full = Path(here) / name
            if name.endswith(suffix) and full.is_file() and not full.is_symlink():
                found.append(full)
    return found


def _writable(folder: str, dir_fd: int | None = None) -> None:
    """A folder its owner made read-only (chmod 000) must still be emptied."""
    try:
        mode = os.lstat(folder, dir_fd=dir_fd).st_mode
        if mode & 0o700 != 0o700:
            os.chmod(folder, mode | 0o700, dir_fd=dir_fd)
    except OSError:
        pass

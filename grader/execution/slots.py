"""Sandbox slots claimed host-wide: a slot is a sandbox uid (sandbox.uid_for_slot), and RLIMIT_NPROC and
the files a uid may touch are shared by everything running as it, so two notebooks running at once on one
host, in one grade run or in two, in threads or in Dask worker processes, never share a slot."""

from __future__ import annotations

import fcntl
import os
import stat
import tempfile
from pathlib import Path

MAX_SLOTS = 1000


def claim_slots(n: int) -> list[tuple[int, int]]:
    """n sandbox slots no other process on this host holds: (slot, fd of its held lock)."""
    folder = Path(tempfile.gettempdir()) / f"labgrader-slots-{os.geteuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    st = folder.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise OSError(f"{folder} is not a folder of this user")
    claims: list[tuple[int, int]] = []
    try:
        for slot in range(MAX_SLOTS):
            fd = os.open(folder / f"{slot}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            claims.append((slot, fd))
            if len(claims) == n:
                return claims
        raise OSError(f"all {MAX_SLOTS} slots in {folder} are taken")
    except BaseException:
        for _, fd in claims:
            os.close(fd)
        raise

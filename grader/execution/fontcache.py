"""matplotlib's font list, built once by the grader outside the sandbox, copied into each sandbox.

Every sandbox starts with a fresh MPLCONFIGDIR, where matplotlib would scan the fonts again on its
first import (its `fontlist-*.json`). The grader builds that file once per matplotlib version, in an
environment as bare as the sandbox's, and copies it into each notebook's config dir before the
kernel starts: a copy, since matplotlib wants its config dir writable.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PATTERN = "fontlist-*.json"
BUILD_TIMEOUT_S = 300


class FontCacheProblem(Exception):
    """Why the font list could not be built, in a few words."""


def folder_for(root: str | os.PathLike) -> Path:
    return Path(root) / f"matplotlib-{importlib.metadata.version('matplotlib')}"


def prepare(root: str | os.PathLike) -> tuple[Path, str]:
    """The folder holding the font list for this matplotlib and what was done ("built" or "found")."""
    folder = folder_for(root)
    if _font_lists(folder):
        return folder, "found"
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        config, home = tmp / "config", tmp / "home"
        config.mkdir()
        home.mkdir()
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
               "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(config),
               "XDG_CACHE_HOME": str(home / ".cache"), "XDG_CONFIG_HOME": str(home / ".config"),
               "XDG_DATA_HOME": str(home / ".local" / "share"), "PYTHONNOUSERSITE": "1"}
        try:
            done = subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"], env=env, cwd=tmp,
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise FontCacheProblem(f"matplotlib took over {BUILD_TIMEOUT_S} s to list the fonts") from None
        lists = _font_lists(config)
        if done.returncode != 0 or not lists:
            last = (done.stderr.decode(errors="replace").strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            raise FontCacheProblem(f"matplotlib wrote no font list ({last[:160]})")
        for f in lists:
            os.chmod(f, 0o644)
        os.chmod(config, 0o755)
        try:
            os.rename(config, folder)
        except OSError:
            if not _font_lists(folder):
                raise
        return folder, "built"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def seed(folder: str | os.PathLike | None, config_dir: str | os.PathLike) -> None:
    """Copy the font list into a notebook's fresh MPLCONFIGDIR (nothing when there is none; a failed
    copy only costs the notebook the scan it would have made anyway)."""
    lists = _font_lists(Path(folder)) if folder is not None else []
    config_dir = Path(config_dir)
    for f in lists:
        try:
            config_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, config_dir / f.name, follow_symlinks=False)
        except OSError:
            with contextlib.suppress(OSError):
                (config_dir / f.name).unlink()


def _font_lists(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.glob(PATTERN) if p.is_file() and not p.is_symlink())
    except OSError:
        return []

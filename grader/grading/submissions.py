"""Discovery: which students a folder (or an LMS download) holds, one `Submission` each."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from grader.common.errors import UserError
from grader.common.names import terminal

SKIP_NAMES = {"__MACOSX", "__pycache__"}


@dataclass(frozen=True)
class Submission:
    student: str
    path: Path

    @property
    def is_notebook(self) -> bool:
        return self.path.is_file()



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
        try:
            if entry.name.startswith(".") or entry.name in SKIP_NAMES or entry.is_symlink():
                continue
            notebook = entry.is_file() and entry.suffix == ".ipynb"
        except OSError:
            notebook = False  # grading this entry says what is wrong with it, as its student's status
        if notebook:
            subs.append(Submission(entry.stem, entry))
        elif not _is_loose_file(entry):
            subs.append(Submission(entry.name, entry))
    names = [s.student for s in subs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"{root}: student {dupes[0]!r} has both a folder and a notebook; keep one")
    return subs


def _is_loose_file(entry: Path) -> bool:
    try:
        return not entry.is_dir()
    except OSError:
        return False


def submissions_root(root: Path, layout: str, out: Path, spec, say) -> Path:
    """Plain per-student folders as given; an LMS download (zip, Canvas, Moodle) unpacked into OUT/lms first."""
    if not os.path.lexists(root):
        raise UserError(f"{root}: no such folder")
    if layout == "folders" or (root.is_file() and root.suffix == ".ipynb"):
        return root
    from grader.lms.lms_in import detect_layout, lms_workdir, materialize

    if layout == "auto" and root.is_dir() and detect_layout(root) == "folders":
        return root
    target, entries, refused = materialize(root, layout, lms_workdir(out), known_names=spec.answer_files)
    for r in refused:
        say(f"refused {terminal(r.entry)}: {terminal(r.reason)}")
    say(f"unpacked {len(entries)} submission(s) from {root} into {target}")
    return target

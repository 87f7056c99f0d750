"""Discovery: which students a folder (or an LMS download) holds, one `Submission` each."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from grader.common.errors import UserError
from grader.common.names import terminal
from grader.lms.lms_in import (OUTPUT_DIRS, OUTPUT_REASON, Refused, both_reason, detect_layout, is_output_folder,
                               lms_workdir, materialize)

SKIP_NAMES = {"__MACOSX", "__pycache__"}


@dataclass(frozen=True)
class Submission:
    student: str
    path: Path

    @property
    def is_notebook(self) -> bool:
        return self.path.is_file()


def _same(entry: Path, out: Path | None) -> bool:
    try:
        return out is not None and out.exists() and os.path.samefile(entry, out)
    except OSError:
        return False


def scan(root: Path, out: Path | None = None) -> tuple[list[Submission], list[Refused]]:
    """The students in ROOT (a folder per student, holding a notebook and maybe answer files, or a lone
    <student>.ipynb), and the entries that are not taken as one, each with its reason.

    Hidden entries and loose files are passed over; a symbolic link is refused (never followed);
    so is labgrader's own output (OUT inside the class folder, even before anything was written there,
    or the class folder used as OUT:
    its feedback/, executed/, ...), and a notebook whose student also has a folder (the folder is
    graded), as an LMS zip of the same folder does.
    """
    if not os.path.lexists(root):
        raise UserError(f"{root}: no such folder")
    if root.is_file() and root.suffix == ".ipynb":
        return [Submission(root.stem, root)], []
    if not root.is_dir():
        raise UserError(f"{root}: is not a folder of submissions")
    root_is_out = is_output_folder(root)
    found: list[tuple[bool, str, Submission]] = []
    refused: list[Refused] = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.name in SKIP_NAMES:
            continue
        try:
            if entry.is_symlink():
                refused.append(Refused(entry.name, "symbolic link (not followed)"))
                continue
            is_dir = entry.is_dir()
            notebook = not is_dir and entry.is_file() and entry.suffix == ".ipynb"
        except OSError:
            is_dir, notebook = True, False  # grading this entry says what is wrong with it, as its student's status
        if is_dir and (_same(entry, out) or is_output_folder(entry) or (root_is_out and entry.name in OUTPUT_DIRS)):
            refused.append(Refused(entry.name, OUTPUT_REASON))
        elif notebook:
            found.append((False, entry.name, Submission(entry.stem, entry)))
        elif is_dir:
            found.append((True, entry.name, Submission(entry.name, entry)))
    kept: dict[str, tuple[str, Submission]] = {}
    for _is_dir, name, sub in sorted(found, key=lambda f: (not f[0], f[1])):
        if sub.student in kept:
            refused.append(Refused(name, both_reason(sub.student)))
        else:
            kept[sub.student] = (name, sub)
    return [sub for _name, sub in sorted(kept.values(), key=lambda k: k[0])], refused


def _said(refused: list[Refused], say) -> list[Refused]:
    for r in refused:
        say(f"refused {terminal(r.entry)}: {terminal(r.reason)}")
    return refused


def submissions(root: Path, layout: str, out: Path, spec, say) -> tuple[list[Submission], list[Refused]]:
    """Plain per-student folders as given; an LMS download (zip, Canvas, Moodle) unpacked into OUT/lms first.
    -> the students, and every entry not taken as one (each said in a line as well)."""
    if not os.path.lexists(root):
        raise UserError(f"{root}: no such folder")
    if layout == "folders" or (root.is_file() and root.suffix == ".ipynb") or \
            (layout == "auto" and root.is_dir() and detect_layout(root) == "folders"):
        subs, refused = scan(root, out)
        return subs, _said(refused, say)
    target, entries, unpacked_refused = materialize(root, layout, lms_workdir(out), known_names=spec.answer_files)
    subs, refused = scan(target, out)
    refused = _said(list(unpacked_refused), say) + _said(refused, say)
    say(f"unpacked {len(entries)} submission(s) from {root} into {target}")
    return subs, refused

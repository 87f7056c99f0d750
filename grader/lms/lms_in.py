"""LMS bulk downloads (Canvas, Moodle, or plain folders; a .zip or unpacked) -> one folder per student.

The grade pipeline only understands plain per-student folders. This module is the single place
that knows how Canvas and Moodle name their downloads, and the single place that opens an
untrusted archive: entries that would escape the target folder, links, device files and zip
bombs are refused with a one-line reason instead of being extracted. Links in an unpacked
folder are never followed. What it learned about each student (display name, LMS user id,
late flag) is kept in `lms.json` so `export` can map grades back to LMS ids.

Entry point for `grade`:  materialize(path, layout, workdir) -> (submissions_dir, entries, refused)
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from grader.common.atomic import make_dir, write_json_atomic
from grader.common.errors import UserError
from grader.common.names import display, file_stem
from grader.common.walk import remove_tree, walk

LAYOUTS = ("auto", "canvas", "moodle", "folders")
LMS_FORMAT = "labgrader-lms/1"
LMS_FILE = "lms.json"
LMS_DIR = "lms"
IGNORED_NAMES = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini", ".ipynb_checkpoints", "__pycache__"}

CANVAS_RE = re.compile(r"^(?P<name>[^_/]+)_(?:(?P<late>late)_)?(?P<uid>\d+)_(?P<sid>\d+)_(?P<file>[^/]+)$", re.IGNORECASE)
MOODLE_DIR_RE = re.compile(r"^(?P<name>.+?)_(?P<id>\d+)_assignsubmission_(?P<plugin>[a-z]+)_?$")
MOODLE_FILE_RE = re.compile(r"^(?P<name>.+?)_(?P<id>\d+)_assignsubmission_(?P<plugin>[a-z]+)_(?P<file>[^/]+)$")
REUPLOAD_RE = re.compile(r"^(?P<stem>.+)-(?P<n>\d+)(?P<ext>\.[^.]+)$")
MAX_ID_CHARS = 100
SAFE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
CHUNK = 1 << 20
NAME_MAX = 255  # bytes in one file or folder name (Linux, macOS, Windows)
# what `grade`, `review` and `export` write into OUT: never a student's submission
OUTPUT_DIRS = ("feedback", "executed", "review", LMS_DIR, "export")
OUTPUT_REASON = "labgrader's own output folder, not a submission"


class Entry(NamedTuple):
    """One student found in the download; `files` is their plain folder under workdir."""

    student: str
    display_name: str
    lms_user_id: str | None
    late: bool
    files: Path


class Refused(NamedTuple):
    entry: str
    reason: str


@dataclass(frozen=True)
class UnpackLimits:
    """Caps against zip bombs and runaway folders; a class of notebooks stays far below them."""

    max_entries: int = 20_000
    max_bytes: int = 4 << 30


@dataclass
class _Student:
    """A student while gathering; files: name in their folder -> (source, re-upload number, label)."""

    student: str
    display_name: str
    lms_user_id: str | None
    late: bool = False
    files: dict = field(default_factory=dict)


# public API ------------------------------------------------------------------------------------

def materialize(path: str | Path, layout: str, workdir: str | Path, *, known_names=None,
                limits: UnpackLimits = UnpackLimits()) -> tuple[Path, list[Entry], list[Refused]]:
    """Turn an LMS download (zip or folder, or one notebook) into WORKDIR/submissions/<student>/.

    layout: "auto" | "canvas" | "moodle" | "folders". known_names: the answer file names a
    Canvas re-upload suffix is stripped back to (default: the bundled spec's answer files).
    WORKDIR/submissions is rebuilt from scratch on every call (the input is never modified),
    WORKDIR/unpacked holds an extracted zip, and WORKDIR/lms.json the roster for `export`.
    Raises UserError for an unreadable input or one over the unpack limits.
    """
    path, workdir = Path(path), Path(workdir)
    if layout not in LAYOUTS:
        raise UserError(f"--layout {layout}: not one of {', '.join(LAYOUTS)}")
    if not os.path.lexists(path):
        raise UserError(f"{path}: no such file or folder")
    if path.is_symlink():
        raise UserError(f"{path}: is a symbolic link; give the real path")
    known = set(known_names) if known_names is not None else _default_known_names()
    make_dir(workdir)
    refused: list[Refused] = []
    if path.is_file() and zipfile.is_zipfile(path):
        unpacked = workdir / "unpacked"
        _fresh_dir(unpacked)
        refused += safe_extract(path, unpacked, limits)
        root = _unwrap(unpacked, archive=True, known=known)
    elif path.is_file() and path.suffix == ".ipynb":
        root = path
    elif path.is_dir():
        root = _unwrap(path, archive=False, known=known) if layout != "folders" else path
    elif path.is_file() and path.suffix.lower() == ".zip":
        raise UserError(f"{path}: is not a valid zip archive (damaged or incomplete download?)")
    else:
        raise UserError(f"{path}: neither a folder, a .zip nor a .ipynb")

    chosen = detect_layout(root) if layout == "auto" else layout
    if root.is_file():
        students, more = {}, []
        sid = _safe_id(root.stem)
        students[sid] = _Student(sid, root.stem, None)
        students[sid].files[root.name] = (root, 0, root.name)
    else:
        students, more = {"canvas": _gather_canvas, "moodle": _gather_moodle, "folders": _gather_folders}[chosen](root, known)
    refused += more

    target = workdir / "submissions"
    staging = workdir / "submissions.partial"
    _fresh_dir(staging)
    entries, more = _write_students(students, staging, target, limits)
    refused += more
    if os.path.lexists(target):
        remove_tree(target)
    os.replace(staging, target)
    write_json_atomic(workdir / LMS_FILE, _lms_document(path, chosen, entries, refused))
    return target, entries, refused


def detect_layout(path: str | Path) -> str:
    """"canvas", "moodle" or "folders", from the names alone (a .zip is not extracted)."""
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = [i.filename.replace("\\", "/") for i in zf.infolist()]
        except (OSError, zipfile.BadZipFile) as e:
            raise UserError(f"{path}: cannot read the zip: {e}")
        return _detect_names(_strip_wrapper(names))
    if path.is_dir():
        names = []
        for e in os.scandir(path):
            names.append(e.name + "/" if e.is_dir(follow_symlinks=False) else e.name)
        return _detect_names(names)
    return "folders"


def is_output_folder(path: str | Path) -> bool:
    """Whether a folder is an OUT that `grade` wrote: its store or work dirs, its LMS roster, or
    its results.json (labgrader's own, by its format line).

    Such a folder inside a class folder (`grade . --out grading-out`, or OUT given as the class
    folder itself) is labgrader's own output, never a student's submission.
    """
    p = Path(path)
    try:
        if p.is_symlink() or not p.is_dir():
            return False
        for store in (".state", ".work"):
            if (p / store).is_dir() and not (p / store).is_symlink():
                return True
        if (p / LMS_DIR / LMS_FILE).is_file():
            return True
        fd = os.open(p / "results.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            return b'"format": "labgrader-results/' in f.read(256)
    except OSError:
        return False


def lms_workdir(out: str | Path) -> Path:
    """Where `grade --out OUT` should materialize, so that `export OUT` finds OUT/lms/lms.json."""
    return Path(out) / LMS_DIR


def load_lms(out: str | Path) -> dict:
    """The roster `materialize` left for OUT: {student: {display_name, lms_user_id, late}}; {} if none."""
    import json

    for candidate in (Path(out) / LMS_DIR / LMS_FILE, Path(out) / LMS_FILE):
        if candidate.is_file():
            try:
                doc = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise UserError(f"{candidate}: unreadable: {e}")
            if not isinstance(doc, dict) or doc.get("format") != LMS_FORMAT or not isinstance(doc.get("students"), dict):
                raise UserError(f"{candidate}: not a {LMS_FORMAT} file")
            return {"layout": doc.get("layout"), "students": doc["students"]}
    return {"layout": None, "students": {}}


def copy_tree(src: str | Path, dst: str | Path, limits: UnpackLimits = UnpackLimits()) -> list[Refused]:
    """Copy the regular files below src into dst (created); links and special files refused, never followed."""
    src, dst = Path(src), Path(dst)
    refused: list[Refused] = []
    if src.is_symlink() or not src.is_dir():
        raise UserError(f"{src}: not a folder")
    s = _Student("copy", "copy", None)
    for rel, path in _walk(src, src.name, refused):
        _add_file(s, (rel, 0), path, f"{src.name}/{rel}", refused)
    make_dir(dst.parent)
    staging = dst.parent / f".{dst.name}.partial"
    _fresh_dir(staging)
    _entries, more = _write_students({"copy": s}, staging, dst, limits)
    if os.path.lexists(dst):
        remove_tree(dst)
    made = staging / "copy"
    if made.is_dir():
        os.replace(made, dst)
    else:
        dst.mkdir()
    remove_tree(staging)
    return refused + [r for r in more if r.reason != "no files in this submission"]


def canonical_name(name: str, known) -> tuple[str, int]:
    """Undo Canvas's re-upload suffix: `7b_ex1-2.json` -> (`7b_ex1.json`, 2) when `7b_ex1.json` is expected.

    Notebook names carry no meaning to the grader, so their suffix is always dropped.
    """
    m = REUPLOAD_RE.match(name)
    if m:
        original = m["stem"] + m["ext"]
        if original in known or m["ext"].lower() == ".ipynb":
            return original, int(m["n"])
    return name, 0


# the zip -------------------------------------------------------------------------------------

def safe_extract(zip_path: str | Path, dest: str | Path, limits: UnpackLimits = UnpackLimits()) -> list[Refused]:
    """Extract what is safe; refuse the rest with a reason. Over the limits: UserError, nothing kept."""
    zip_path, dest = Path(zip_path), Path(dest)
    refused: list[Refused] = []
    make_dir(dest)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as e:
        raise UserError(f"{zip_path}: cannot read the zip: {e}")
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise UserError(f"{zip_path}: {len(infos)} entries, over the limit of {limits.max_entries} "
                            "(a zip bomb?); unpack it yourself if it is genuine")
        declared = sum(i.file_size for i in infos)
        if declared > limits.max_bytes:
            raise UserError(f"{zip_path}: {_size(declared)} uncompressed, over the limit of {_size(limits.max_bytes)} "
                            "(a zip bomb?); unpack it yourself if it is genuine")
        seen: set[str] = set()
        written = 0
        root = dest.resolve()
        for info in infos:
            name = info.filename
            reason = _unsafe_entry(info)
            parts = _parts(name)
            if reason is None and (not parts or _ignored(parts)):
                continue
            if reason is None:
                reason = _too_long(parts)
            key = "/".join(parts)
            if reason is None and key in seen:
                reason = "duplicate entry; the first one is kept"
            if reason:
                refused.append(Refused(name, reason))
                continue
            seen.add(key)
            target = dest.joinpath(*parts)
            if not target.resolve().is_relative_to(root):
                refused.append(Refused(name, "escapes the target folder"))
                continue
            try:
                _mkdir_inside(dest, parts if info.is_dir() else parts[:-1])
            except _Clash as e:
                refused.append(Refused(name, str(e)))
                continue
            except OSError as e:
                refused.append(Refused(name, f"cannot create its folder: {e.strerror or e}"))
                continue
            if info.is_dir():
                continue
            try:
                written += _extract_one(zf, info, target, limits.max_bytes - written)
            except _Clash as e:
                refused.append(Refused(name, str(e)))
            except _TooBig:
                raise UserError(f"{zip_path}: more than {_size(limits.max_bytes)} uncompressed "
                                "(the sizes it declares are false: a zip bomb?)")
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as e:
                _unlink(target)
                refused.append(Refused(name, f"corrupt entry: {e}"))
            except NotImplementedError as e:
                _unlink(target)
                refused.append(Refused(name, f"unsupported compression: {e}"))
    return refused


class _Clash(Exception):
    pass


class _TooBig(Exception):
    pass


def _unsafe_entry(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if any(ord(c) < 32 for c in name):
        return "control characters in the name"
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        return "absolute path"
    if ".." in norm.split("/"):
        return "escapes the target folder (..)"
    mode = info.external_attr >> 16
    if mode:
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            return "symbolic link"
        if kind in (stat.S_IFCHR, stat.S_IFBLK):
            return "device file"
        if kind in (stat.S_IFIFO, stat.S_IFSOCK):
            return "special file (fifo or socket)"
    if info.flag_bits & 0x1:
        return "encrypted"
    return None


def _too_long(parts: list[str]) -> str | None:
    """A name no filesystem can hold: refused as an entry instead of failing the whole unpack."""
    for p in parts:
        if len(os.fsencode(p)) > NAME_MAX:
            return f"a name in its path is longer than {NAME_MAX} bytes"
    return None


def _ignored(parts: list[str]) -> bool:
    return any(p in IGNORED_NAMES for p in parts)


def _parts(name: str) -> list[str]:
    return [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]


def _mkdir_inside(root: Path, parts: list[str]) -> None:
    """Create root/parts one level at a time, never through a link or over a file."""
    here = root
    for p in parts:
        here = here / p
        if os.path.lexists(here):
            if here.is_symlink() or not here.is_dir():
                raise _Clash(f"{p} is both a file and a folder in the archive")
        else:
            here.mkdir()


def _extract_one(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int) -> int:
    if os.path.lexists(target):
        raise _Clash("is both a file and a folder in the archive")
    total = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with zf.open(info) as src, os.fdopen(fd, "wb") as dst:
        while chunk := src.read(CHUNK):
            total += len(chunk)
            if total > budget:
                dst.close()
                _unlink(target)
                raise _TooBig()
            dst.write(chunk)
    return total


# detection -----------------------------------------------------------------------------------

def _strip_wrapper(names: list[str]) -> list[str]:
    """Names inside a single top folder, when that folder holds an LMS download."""
    kept = [(n, _parts(n)) for n in names]
    kept = [(n, p) for n, p in kept if p and not _ignored(p)]
    if len({p[0] for _, p in kept}) != 1:
        return names
    inner = ["/".join(p[1:]) + ("/" if n.endswith("/") else "") for n, p in kept if len(p) > 1]
    return inner if inner and _detect_names(inner) != "folders" else names


def _detect_names(names: list[str]) -> str:
    tops: dict[str, bool] = {}
    for n in names:
        parts = _parts(n)
        if not parts or parts[0] in IGNORED_NAMES:
            continue
        tops[parts[0]] = tops.get(parts[0], False) or len(parts) > 1 or n.endswith("/")
    files = [t for t, is_dir in tops.items() if not is_dir]
    dirs = [t for t, is_dir in tops.items() if is_dir]
    canvas = sum(1 for f in files if CANVAS_RE.match(f))
    moodle = sum(1 for d in dirs if MOODLE_DIR_RE.match(d)) + sum(1 for f in files if MOODLE_FILE_RE.match(f))
    if moodle and moodle * 2 >= len(tops):
        return "moodle"
    if canvas and canvas * 2 >= len(tops):
        return "canvas"
    return "folders"


def _unwrap(root: Path, *, archive: bool, known=()) -> Path:
    """One folder holding the download: descend into it.

    An LMS layout inside is proof enough; a zip is also unwrapped when its one folder looks
    like a class rather than one student's folder, as zipping a class folder does.
    """
    kids = [e for e in os.scandir(root) if e.name not in IGNORED_NAMES]
    if len(kids) == 1 and kids[0].is_dir(follow_symlinks=False):
        inner = Path(kids[0].path)
        if detect_layout(inner) != "folders" or (archive and _looks_like_class(inner, known)):
            return inner
    return root


def _looks_like_class(folder: Path, known=()) -> bool:
    """A class folder: student folders or several <student>.ipynb, loose files (a README) aside.

    One student's folder holds their answer files, or one notebook beside folders that hold no
    notebook or answer file (src/, data/).
    """
    kids = [e for e in os.scandir(folder) if e.name not in IGNORED_NAMES and not e.name.startswith(".")]
    files = [e for e in kids if not e.is_dir(follow_symlinks=False)]
    if any(e.name in known for e in files):
        return False
    dirs = [e for e in kids if e.is_dir(follow_symlinks=False)]
    notebooks = [e for e in files if e.name.endswith(".ipynb")]
    if len(notebooks) >= 2 or (dirs and not notebooks):
        return True
    return bool(dirs) and any(_holds_submission(Path(d.path), known) for d in dirs)


def _holds_submission(folder: Path, known) -> bool:
    try:
        return any((e.name.endswith(".ipynb") or e.name in known) and e.is_file(follow_symlinks=False)
                   for e in os.scandir(folder))
    except OSError:
        return False


# gathering, one function a layout ------------------------------------------------------------

def _gather_canvas(root: Path, known) -> tuple[dict, list[Refused]]:
    students: dict[str, _Student] = {}
    refused: list[Refused] = []
    for e in _scan(root, refused):
        m = CANVAS_RE.match(e.name)
        if not e.is_file(follow_symlinks=False) or not m:
            refused.append(Refused(e.name, "not a Canvas submission file (<name>_<userid>_<submissionid>_<file>)"))
            continue
        sid = _safe_id(f"{m['name']}_{m['uid']}")
        s = students.setdefault(sid, _Student(sid, m["name"], m["uid"]))
        s.late = s.late or bool(m["late"])
        _add_file(s, canonical_name(m["file"], known), Path(e.path), e.name, refused)
    return students, refused


def _gather_moodle(root: Path, known) -> tuple[dict, list[Refused]]:
    students: dict[str, _Student] = {}
    refused: list[Refused] = []
    for e in _scan(root, refused):
        is_dir = e.is_dir(follow_symlinks=False)
        m = (MOODLE_DIR_RE if is_dir else MOODLE_FILE_RE).match(e.name)
        if not m:
            refused.append(Refused(e.name, "not a Moodle submission (<Full Name>_<id>_assignsubmission_file_)"))
            continue
        if m["plugin"] != "file":
            refused.append(Refused(e.name, f"Moodle {m['plugin']} submission: only uploaded files are graded"))
            continue
        sid = _safe_id(f"{_slug(m['name'])}_{m['id']}")
        s = students.setdefault(sid, _Student(sid, m["name"], m["id"]))
        if is_dir:
            for rel, src in _walk(Path(e.path), e.name, refused):
                _add_file(s, (rel, 0), src, f"{e.name}/{rel}", refused)
        else:
            _add_file(s, (m["file"], 0), Path(e.path), e.name, refused)
    return students, refused


def _gather_folders(root: Path, known) -> tuple[dict, list[Refused]]:
    """Students named exactly as their folder or notebook, as `grade` names them in a plain folder:
    names that only normalise alike (`Ann Lee`, `ann-lee`) stay different students."""
    students: dict[str, _Student] = {}
    refused: list[Refused] = []
    for e in sorted(_scan(root, refused), key=lambda e: (not e.is_dir(follow_symlinks=False), e.name)):
        is_dir = e.is_dir(follow_symlinks=False)
        if not is_dir and not e.name.endswith(".ipynb"):
            refused.append(Refused(e.name, "a loose file: expected a folder or a <student>.ipynb per student"))
            continue
        if is_dir and is_output_folder(e.path):
            refused.append(Refused(e.name, OUTPUT_REASON))
            continue
        name = e.name if is_dir else e.name[: -len(".ipynb")]
        if name in students:
            refused.append(Refused(e.name, both_reason(name)))
            continue
        s = students[name] = _Student(name, name, None)
        if is_dir:
            for rel, src in _walk(Path(e.path), e.name, refused):
                _add_file(s, (rel, 0), src, f"{e.name}/{rel}", refused)
        else:
            _add_file(s, (e.name, 0), Path(e.path), e.name, refused)
    return students, refused


def both_reason(name: str) -> str:
    """Why a <student>.ipynb beside a <student>/ folder is refused (a plain folder and a zip say the same)."""
    return f"student {display(name)!r} has both a folder and a notebook; the folder is graded, keep one"


def _scan(root: Path, refused: list[Refused]):
    """Top-level entries, sorted; links and special files refused, never followed."""
    out = []
    for e in sorted(os.scandir(root), key=lambda e: e.name):
        if e.name in IGNORED_NAMES or e.name.startswith("."):
            continue
        why = _not_plain(e)
        if why:
            refused.append(Refused(e.name, why))
            continue
        out.append(e)
    return out


def _walk(folder: Path, label: str, refused: list[Refused]):
    """(relative posix name, path) of every regular file below folder, without following links."""
    for dirpath, dirnames, filenames in walk(folder):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            if d in IGNORED_NAMES:
                continue
            full = here / d
            if full.is_symlink():
                refused.append(Refused(f"{label}/{full.relative_to(folder).as_posix()}", "symbolic link (not followed)"))
            else:
                keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            if f in IGNORED_NAMES:
                continue
            full = here / f
            rel = full.relative_to(folder).as_posix()
            why = _not_plain_path(full)
            if why:
                refused.append(Refused(f"{label}/{rel}", why))
            else:
                yield rel, full


def _not_plain(e: os.DirEntry) -> str | None:
    if e.is_symlink():
        return "symbolic link (not followed)"
    if e.is_dir(follow_symlinks=False) or e.is_file(follow_symlinks=False):
        return None
    return "device or special file"


def _not_plain_path(p: Path) -> str | None:
    mode = os.lstat(p).st_mode
    if stat.S_ISLNK(mode):
        return "symbolic link (not followed)"
    if not stat.S_ISREG(mode):
        return "device or special file"
    return None


def _add_file(s: _Student, named: tuple[str, int], src: Path, label: str, refused: list[Refused]) -> None:
    """Keep the newest re-upload when two files land on the same name."""
    rel, n = named
    old = s.files.get(rel)
    if old is None:
        s.files[rel] = (src, n, label)
    elif n > old[1]:
        refused.append(Refused(old[2], f"superseded by the later upload {label}"))
        s.files[rel] = (src, n, label)
    else:
        refused.append(Refused(label, f"superseded by the later upload {old[2]}"))


# writing -------------------------------------------------------------------------------------

def _write_students(students: dict, staging: Path, final: Path, limits: UnpackLimits) -> tuple[list[Entry], list[Refused]]:
    entries: list[Entry] = []
    refused: list[Refused] = []
    count = written = 0
    for sid in sorted(students):
        s = students[sid]
        if not s.files:
            refused.append(Refused(s.display_name, "no files in this submission"))
            continue
        folder = staging / sid
        try:
            folder.mkdir()
        except OSError as e:
            refused.append(Refused(s.display_name, f"cannot create its folder: {e.strerror or e}"))
            continue
        for rel, (src, _n, label) in sorted(s.files.items()):
            count += 1
            if count > limits.max_entries:
                raise UserError(f"more than {limits.max_entries} files in the submissions; over the unpack limit")
            parts = _parts(rel)
            try:
                _mkdir_inside(folder, parts[:-1])
                written += _copy_nofollow(src, folder.joinpath(*parts), limits.max_bytes - written)
            except _Clash as e:
                refused.append(Refused(label, str(e)))
            except _TooBig:
                raise UserError(f"the submissions hold more than {_size(limits.max_bytes)}; over the unpack limit")
            except OSError as e:
                refused.append(Refused(label, f"cannot copy: {e.strerror or e}"))
        entries.append(Entry(sid, s.display_name, s.lms_user_id, s.late, final / sid))
    return entries, refused


def _copy_nofollow(src: Path, dst: Path, budget: int) -> int:
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(0, "not a regular file")
        total = 0
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(out, "wb") as g:
            while chunk := f.read(CHUNK):
                total += len(chunk)
                if total > budget:
                    raise _TooBig()
                g.write(chunk)
    return total


def _lms_document(source: Path, layout: str, entries: list[Entry], refused: list[Refused]) -> dict:
    return {
        "format": LMS_FORMAT,
        "source": str(source),
        "layout": layout,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "students": {display(e.student): {"display_name": display(e.display_name), "lms_user_id": e.lms_user_id,
                                          "late": e.late}
                     for e in entries},
        "refused": [{"entry": display(r.entry), "reason": display(r.reason)} for r in refused],
    }


# small helpers -------------------------------------------------------------------------------

def _default_known_names() -> set[str]:
    from reference.spec import load_spec

    return set(load_spec(None).answer_files)


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-") or "student"


def _safe_id(name: str) -> str:
    """A student's folder name: the name when plain, else its slug; one too long gets a bounded unique stem."""
    if SAFE_ID_RE.match(name) and PurePosixPath(name).name == name:
        return name
    slug = _slug(name)
    return slug if len(slug) <= MAX_ID_CHARS else file_stem(name)


def _fresh_dir(path: Path) -> None:
    if os.path.lexists(path):
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            remove_tree(path)
    path.mkdir(parents=True)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"

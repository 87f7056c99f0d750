"""`labgrader gradescope`: run as a Gradescope autograder, or build the zip Gradescope installs.

run: ROOT/submission (the student's upload) is graded by the ordinary `grade` pipeline into a
temporary OUT, and that student's result becomes ROOT/results/results.json. Gradescope shows a
missing or broken results.json as an opaque failure, so a schema-valid file saying "not
finished" is written before grading starts and replaced at the end; whatever goes wrong
(notebook crash, timeout, grader failure) still ends as score 0 with the reason.

build: a zip with setup.sh (python, bubblewrap, CPU torch, this labgrader) and run_autograder.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
import zipfile
from dataclasses import fields
from pathlib import Path

from grader.common.errors import UserError
from grader.execution.limits import Limits

TORCH_SPEC = "torch==2.13.0"
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
VENV = "/opt/labgrader"
DATA_DIR = "/opt/labgrader-data"
SOURCE = "/autograder/source"
BUNDLED_PATHS = ("grader", "reference", "schemas", "pyproject.toml", "README.md")
SKIPPED = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints"}
STUDENT = "student"


def gradescope_command(args) -> int:
    if args.action == "build":
        return build_command(args)
    return run_command(args)


# run -----------------------------------------------------------------------------------------

def run_command(args) -> int:
    from grader.lms.export import gradescope_document, gradescope_errors, gradescope_failure, write_gradescope

    root = Path(args.root)
    target = root / "results" / "results.json"
    start = time.monotonic()
    write_gradescope(target, gradescope_failure("grading did not finish (the autograder's time limit?)"))
    title = "Lab 7b"
    try:
        header, result, log = grade_submission(root / "submission", args)
        title = f"Lab {header.get('assignment', '7b')}"
        doc = gradescope_document(result, title=title, execution_time=time.monotonic() - start)
        if header.get("options", {}).get("no_execute"):
            doc["output"] += "\nNo notebook was submitted: the answer files were scored as they are."
        problems = gradescope_errors(doc)
        if problems:
            doc = gradescope_failure(f"internal error: the results do not fit Gradescope's format: {problems[0]}",
                                     title=title, execution_time=time.monotonic() - start)
    except UserError as e:
        log, doc = "", gradescope_failure(str(e), title=title, execution_time=time.monotonic() - start)
    except Exception as e:  # the results file must say why whatever happened
        log, doc = "", gradescope_failure(f"internal error: {type(e).__name__}: {e}", title=title,
                                          execution_time=time.monotonic() - start)
    try:
        write_gradescope(target, doc)
    except (UserError, ValueError) as e:
        write_gradescope(target, gradescope_failure(f"internal error: the results could not be written: {e}", title=title))
    if log:
        print(log, end="" if log.endswith("\n") else "\n")
    print(f"labgrader: wrote {target}: score {doc['score']:g}")
    return 0


def grade_submission(submission: Path, args) -> tuple[dict, dict, str]:
    """The adapter onto `grade`: grade into a temporary OUT, return (header, the student's result, log).

    `grade` gets this command's own flags (they are grade's flags) and runs as from the command
    line; a submission without a notebook is scored from its answer files (--no-execute). Each
    container grades one notebook, which decodes the data faster than a decoded cache is built.
    """
    from grader.lms.lms_in import copy_tree

    if submission.is_symlink() or not submission.is_dir():
        raise UserError(f"{submission}: no submission folder")
    with tempfile.TemporaryDirectory(prefix="labgrader-gs-") as tmp:
        subs, out = Path(tmp) / "submissions", Path(tmp) / "out"
        refused = copy_tree(submission, subs / STUDENT)
        has_notebook = any(p.suffix == ".ipynb" for p in (subs / STUDENT).rglob("*") if p.is_file())
        grade_args = argparse.Namespace(**{**vars(args), "submissions": str(subs), "out": str(out),
                                           "hide_answers": True, "no_execute": not has_notebook,
                                           "no_data_cache": True})
        code, output = run_grade(grade_args)
        log = "".join(f"labgrader: refused {r.entry}: {r.reason}\n" for r in refused) + output
        if code != 0:
            lines = [ln for ln in log.splitlines() if ln.strip()]
            why = lines[-1].removeprefix("labgrader: ") if lines else f"grade exited with {code}"
            raise UserError(f"grading failed: {why}")
        try:
            doc = json.loads((out / "results.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"grading left no readable results.json: {e}")
        found = [r for r in doc.get("students", []) if r.get("student") == STUDENT]
        if not found:
            raise UserError("grading found no submission in the uploaded files")
        header = {k: v for k, v in doc.items() if k != "students"}
        return header, found[0], log


def run_grade(grade_args: argparse.Namespace) -> tuple[int, str]:
    """`grade` on parsed arguments -> (exit code, what it printed), errors as the CLI prints them.
    grade_command is called directly, never grader.cli, which dispatches to this module."""
    from grader.grade import grade_command

    captured = io.StringIO()
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        try:
            code = grade_command(grade_args)
        except UserError as e:
            print(f"labgrader: {e}", file=sys.stderr)
            code = e.exit_code
    return int(code or 0), captured.getvalue()


# build ---------------------------------------------------------------------------------------

def build_command(args) -> int:
    dest = Path(args.dest)
    repo = Path(__file__).resolve().parents[2]
    files = bundle_files(repo, reference=args.reference, spec=args.spec, run_flags=_run_flags(args),
                         real_data=_needs_real_data(args.reference))
    write_zip(dest, files)
    print(f"wrote {dest}: upload it as the autograder of a Gradescope programming assignment")
    return 0


def bundle_files(repo: Path, *, reference=None, spec=None, run_flags=(), real_data=False) -> dict[str, tuple[bytes, int]]:
    """zip name -> (bytes, mode): the two scripts at the root, the labgrader source, the artifacts."""
    files: dict[str, tuple[bytes, int]] = {}
    flags = list(run_flags)
    if reference:
        files["reference.json"] = (_read(reference), 0o644)
        flags += ["--reference", f"{SOURCE}/reference.json"]
    if spec:
        files["spec.toml"] = (_read(spec), 0o644)
        flags += ["--spec", f"{SOURCE}/spec.toml"]
    if real_data and "--data-dir" not in flags:
        flags += ["--data-dir", DATA_DIR]
    files["setup.sh"] = (setup_script(real_data).encode(), 0o755)
    files["run_autograder"] = (run_script(flags).encode(), 0o755)
    for rel, data in _source_files(repo):
        files[f"labgrader/{rel}"] = (data, 0o644)
    return files


def setup_script(real_data: bool = False) -> str:
    fetch = (f"{VENV}/bin/labgrader data fetch --data-dir {DATA_DIR}\n" if real_data else "")
    return f"""#!/usr/bin/env bash
# Gradescope runs this once, as root, while it builds the autograder image.
set -euxo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y python3 python3-pip python3-venv bubblewrap
python3 -m venv {VENV}
{VENV}/bin/python -m pip install --upgrade pip
# torch first, from the CPU index: a plain requirement would pull the CUDA build.
{VENV}/bin/python -m pip install "{TORCH_SPEC}" --index-url {TORCH_INDEX}
{VENV}/bin/python -m pip install {SOURCE}/labgrader
{fetch}{VENV}/bin/labgrader --version
"""


def run_script(flags: list[str]) -> str:
    import shlex

    args = " ".join(shlex.quote(f) for f in flags)
    return f"""#!/usr/bin/env bash
# Gradescope runs this for every submission; the student's files are in /autograder/submission.
set -u
cd /autograder
mkdir -p /autograder/results
{VENV}/bin/labgrader gradescope run --root /autograder {args}
if [ ! -s /autograder/results/results.json ]; then
  printf '%s\\n' '{{"score": 0, "output": "The autograder could not start; please tell your instructor.", "stdout_visibility": "hidden"}}' > /autograder/results/results.json
fi
"""


def write_zip(dest: Path, files: dict[str, tuple[bytes, int]]) -> Path:
    """The zip with scripts at its root and Unix modes set (Gradescope runs run_autograder as is)."""
    from grader.common.atomic import write_bytes_atomic

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files, key=lambda n: (n not in ("setup.sh", "run_autograder"), n)):
            data, mode = files[name]
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(dest, buf.getvalue())
    except OSError as e:
        raise UserError(f"{dest}: cannot write: {e.strerror or e}")
    return dest


def _source_files(repo: Path):
    """This labgrader's installable source: links inside the repo (grader/schemas) become real files."""
    root = repo.resolve()
    for top in BUNDLED_PATHS:
        path = repo / top
        if path.is_file():
            yield top, path.read_bytes()
            continue
        if not path.is_dir():
            raise UserError(f"{path}: missing from this labgrader checkout; cannot bundle it")
        for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED and not d.endswith(".egg-info"))
            for name in sorted(filenames):
                full = Path(dirpath) / name
                if name.endswith((".pyc", ".pyo")) or not full.resolve().is_relative_to(root):
                    continue
                yield full.relative_to(repo).as_posix(), full.read_bytes()


def _run_flags(args) -> list[str]:
    flags = []
    if getattr(args, "data_dir", None):
        flags += ["--data-dir", str(args.data_dir)]
    if getattr(args, "no_sandbox", False):
        flags.append("--no-sandbox")
    for f in fields(Limits):
        value = getattr(args, f"limit_{f.name}", f.default)
        if value != f.default:
            flags += [f.metadata["flag"], f"{value:g}"]
    return flags


def _needs_real_data(reference) -> bool:
    """A reference measured on real Fashion-MNIST needs the students' notebooks to see it too."""
    if not reference:
        return False
    try:
        doc = json.loads(Path(reference).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{reference}: cannot read the reference artifact: {e}")
    data = (doc.get("provenance") or {}).get("data") or {} if isinstance(doc, dict) else {}
    return data.get("kind") == "real"


def _read(path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}")

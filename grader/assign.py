"""`labgrader assign OUT`: the student handout, as Otter's `assign` or nbgrader's `generate_assignment` make it.

OUT gets the packaged lab notebook, the lab kit (`src/`), a README for students, and
`handout.zip` holding the same files under one folder, for an LMS upload. A folder that
holds anything else, or a handout file someone edited, is refused unless --force, so a handout
never lands on someone's work.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

from grader.common.atomic import make_dir, write_bytes_atomic
from grader.common.errors import UserError
from grader.common.names import terminal
from grader.common.text import one_line

ZIP_NAME = "handout.zip"
ZIP_FOLDER = "lab7b"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same handout is the same zip
README_NAME = "README.md"
REGENERATED = ("src/__pycache__",)  # Python writes it beside the kit once the notebook ran

STUDENT_README = """# Lab 7b: Optimizing Neural Networks

| file | what |
|---|---|
| `{notebook}` | the lab notebook: run it, answer in its two answers cells |
| `src/fmnist_utils.py` | the lab kit the notebook imports (`get_data`, `build_mlp`, `train`) |

The kit and the checker come with **labgrader**: install it (as your course tells you) into the
Python your Jupyter kernel runs, with Jupyter if you have none (`pip install notebook`).

## 1. Get the data

```sh
# Fashion-MNIST, once, into ~/.cache/labgrader/fashion-mnist (checksums verified)
labgrader data fetch
```

Offline, it says which file to put where; `LABGRADER_DATA=DIR` points the notebook at another folder.

## 2. Run the notebook

Open `{notebook}` from this folder (so that `src` is found), e.g. `jupyter notebook {notebook}`,
and run it from the top. Each answers cell writes its file: `{ex1}` (Exercise 1) and `{ex2}`
(Exercise 2). Write η and S as numbers (`0.1` or `"0.1"`), a yes/no answer starting with yes or no.
An η or S off the lab's grid counts as the nearest grid value (in log scale); `check` says so.
The grader runs your notebook again from the top, so the answers must be written by its cells.

## 3. Check before you hand it in

```sh
# is my answer file valid?
labgrader check {ex1}
# the answer files beside the notebook
labgrader check {notebook} --no-execute
# run the notebook (in a sandbox where bubblewrap is installed), then check what it wrote against your own runs
labgrader check {notebook}
```

`check` never tells you whether an optimum or a yes/no answer is right: the course's reference
decides those points. It says whether each answer is valid and, for the notebook, whether it is
consistent with the runs your notebook made and how much of each grid you ran. Running it in
`check` uses labgrader's synthetic demo data unless you pass `--data-dir` or set
`LABGRADER_DATA`. Exit code 0 means every file is valid.
"""


def handout_files(spec) -> dict[str, bytes]:
    """Relative path -> content of every file the handout holds, the zip aside."""
    from grader.execution.labnotebook import NOTEBOOK_NAME, lab_notebook_path
    from reference.kit_install import KIT_FILES

    try:
        notebook = lab_notebook_path().read_bytes()
    except OSError as e:
        raise UserError(f"cannot read the packaged lab notebook {lab_notebook_path()} ({e.strerror or e}); reinstall labgrader")
    ex1, ex2 = (list(spec.answer_files) + ["", ""])[:2]
    readme = STUDENT_README.format(notebook=NOTEBOOK_NAME, ex1=ex1, ex2=ex2)
    files = {NOTEBOOK_NAME: notebook, README_NAME: readme.encode("utf-8")}
    files.update({rel: text.encode("utf-8") for rel, text in KIT_FILES.items()})
    return files


def handout_zip(files: dict[str, bytes]) -> bytes:
    """The files under one folder, with fixed times and modes: the same handout gives the same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for rel in sorted(files):
            info = zipfile.ZipInfo(f"{ZIP_FOLDER}/{rel}", date_time=ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, files[rel])
    return buf.getvalue()


def foreign_entry(out: Path, names: set[str]) -> str | None:
    """The first entry of OUT that a handout does not write, or None when OUT is empty or a previous handout."""
    folders = {p.as_posix() for rel in names for p in Path(rel).parents if p != Path(".")}
    for root, dirs, filenames in os.walk(out):
        rel_root = Path(root).relative_to(out)
        for name in sorted(dirs):
            rel = (rel_root / name).as_posix()
            if rel in REGENERATED:
                dirs.remove(name)
            elif rel not in folders or (Path(root) / name).is_symlink():
                return rel
        for name in sorted(filenames):
            rel = (rel_root / name).as_posix()
            if rel not in names or (Path(root) / name).is_symlink():
                return rel
    return None


def changed_entry(out: Path, files: dict[str, bytes]) -> str | None:
    """The first handout file already in OUT with other bytes than the handout's: a student's work, kept."""
    for rel in sorted(files):
        try:
            if (out / rel).read_bytes() != files[rel]:
                return rel
        except FileNotFoundError:
            continue
        except OSError as e:
            raise UserError(f"cannot read {out / rel} ({e.strerror or e})")
    return None


def write_handout(out: Path, spec, *, force: bool = False) -> list[str]:
    """Write the handout into OUT; -> the relative paths written, the zip last."""
    files = handout_files(spec)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give a folder for the handout")
    if out.is_dir() and not force:
        other = foreign_entry(out, set(files) | {ZIP_NAME})
        if other is not None:
            raise UserError(f"{out} is not empty and not a previous handout (it holds {one_line(repr(other), 80)}); "
                            "choose an empty folder, or pass --force to write the handout beside what is there")
    zipped = handout_zip(files)
    if out.is_dir() and not force:
        changed = changed_entry(out, {**files, ZIP_NAME: zipped})
        if changed is not None:
            raise UserError(f"{out / changed} is not what this handout writes (edited, or from another labgrader); "
                            "move it away, or pass --force to replace it")
    make_dir(out)
    try:
        for rel, data in files.items():
            write_bytes_atomic(out / rel, data)
        write_bytes_atomic(out / ZIP_NAME, zipped)
    except OSError as e:
        raise UserError(f"cannot write the handout into {out} ({e.strerror or e})")
    return [*files, ZIP_NAME]


def assign_command(args) -> int:
    from reference.spec import load_spec

    out = Path(args.out)
    written = write_handout(out, load_spec(), force=args.force)
    if getattr(args, "json", False):
        print(json.dumps({"out": str(out), "files": written, "zip": str(out / ZIP_NAME)}))
    else:
        print(f"wrote the lab 7b handout into {terminal(str(out))}: {', '.join(written)}")
        print(f"upload {terminal(str(out / ZIP_NAME))} to your LMS (it unpacks to {ZIP_FOLDER}/); "
              f"students start with {terminal(str(out / README_NAME))}")
    return 0

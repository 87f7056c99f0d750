"""The lab notebook: the one packaged with labgrader, and the converter that built it from the course's text export.

The course hands out the lab as a copy of the rendered notebook: prose, `In [N]:` markers,
the code, then whatever the cell printed. scripts/build_lab_notebook.py turned that export
once into `reference/lab/lab7b.ipynb` (the outputs go, the prose becomes markdown, the code
stays exactly the students' starting code, quirks included) and completed it with cells the
course added, each marked in its metadata. Everything else reads the packaged notebook.
"""

from __future__ import annotations

import ast
import re
from importlib import resources
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from grader.common.errors import UserError
from grader.common.text import one_line

NOTEBOOK_NAME = "lab7b.ipynb"
ADDED = "added"  # cell.metadata["labgrader"]["added"]: why the course added this cell
_MARKER = re.compile(r"^In \[\s*\d*\s*\]:\s*$")
_MAGIC = re.compile(r"^(\s*)(%|!)")
_HEADING = re.compile(r"^#{1,6} \S")
_INCOMPLETE = ("was never closed", "unterminated triple-quoted", "unexpected EOF", "expected an indented block")


def _masked(lines: list[str]) -> str:
    """IPython magics and shell escapes become `pass`, so ast can judge the rest."""
    return "\n".join(_MAGIC.sub(r"\1pass #", line) if _MAGIC.match(line) else line for line in lines)


def _parse(lines: list[str]) -> str | None:
    """None when the lines are Python, else the syntax error's message."""
    try:
        ast.parse(_masked(lines))
    except SyntaxError as e:
        return e.msg or "syntax error"
    except ValueError as e:
        return str(e)
    return None


def _chunks(lines: list[str]) -> list[tuple[int, int]]:
    """[start, end) line ranges of the runs of non-blank lines."""
    out, start = [], None
    for i, line in enumerate(lines + [""]):
        if line.strip() and start is None:
            start = i
        elif not line.strip() and start is not None:
            out.append((start, i))
            start = None
    return out


def _heading(lines: list[str]) -> bool:
    """A chunk of `# Title` lines at the margin: Python takes it for comments, the export meant markdown."""
    return bool(_HEADING.match(lines[0])) and all(line.startswith("#") for line in lines)


def _looks_like_output(lines: list[str]) -> bool:
    """A lone literal after code (`0.87`, `[1, 2]`) is what the cell printed, not code."""
    try:
        tree = ast.parse("\n".join(lines))
        if len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr):
            ast.literal_eval(tree.body[0].value)
            return True
    except (SyntaxError, ValueError, TypeError):
        pass
    return False


def _code_end(lines: list[str]) -> int:
    """How many chunks after a marker are code: the longest run that stays Python."""
    chunks = _chunks(lines)
    taken = 0
    while taken < len(chunks):
        start = chunks[0][0]
        end = chunks[taken][1]
        if taken and _looks_like_output(lines[chunks[taken][0]:end]):
            break
        error = _parse(lines[start:end])
        if error is None:
            taken += 1
            continue
        if not any(s in error for s in _INCOMPLETE):
            break
        for later in range(taken + 1, len(chunks)):
            if _parse(lines[start:chunks[later][1]]) is None:
                taken = later + 1
                break
        else:
            break
    while taken and taken < len(chunks) and _heading(lines[chunks[taken - 1][0]:chunks[taken - 1][1]]):
        taken -= 1
    return taken


def _markdown(lines: list[str]) -> str:
    return "\n".join(lines).strip("\n").rstrip()


def _split_segment(lines: list[str]) -> tuple[str, str]:
    """A cell's text -> (code, prose that follows it).

    Prose starts at the first markdown heading after the code; the text before it is what
    the cell printed, and is dropped.
    """
    chunks = _chunks(lines)
    taken = _code_end(lines)
    code = "\n".join(lines[chunks[0][0]:chunks[taken - 1][1]]).rstrip() if taken else ""
    rest = chunks[taken:]
    prose_from = next((s for s, _ in rest if _HEADING.match(lines[s])), None)
    prose = _markdown(lines[prose_from:]) if prose_from is not None else ""
    return code, prose


def notebook_from_export(text: str) -> nbformat.NotebookNode:
    """Markdown cells for the prose, code cells exactly as exported, no outputs."""
    lines = text.replace("\r\n", "\n").split("\n")
    markers = [i for i, line in enumerate(lines) if _MARKER.match(line)]
    cells = []
    intro = _markdown(lines[:markers[0]] if markers else lines)
    if intro:
        cells.append(new_markdown_cell(intro))
    for n, at in enumerate(markers):
        stop = markers[n + 1] if n + 1 < len(markers) else len(lines)
        code, prose = _split_segment(lines[at + 1:stop])
        cells.append(new_code_cell(code))
        if prose:
            cells.append(new_markdown_cell(prose))
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    })
    nbformat.validate(nb)
    return nb


def lab_notebook_path() -> Path:
    """The packaged lab notebook (reference/lab/lab7b.ipynb), wherever labgrader is installed."""
    return Path(str(resources.files("reference") / "lab" / NOTEBOOK_NAME))


def load_lab_notebook(path: str | Path | None = None) -> nbformat.NotebookNode:
    """The handout notebook: the export's cells as students see them, plus the course's marked additions."""
    where = Path(path) if path else lab_notebook_path()
    try:
        nb = nbformat.read(where, as_version=4)
        nbformat.validate(nb)
    except OSError as e:
        raise UserError(f"cannot read the lab notebook {where} ({e.strerror or e}); reinstall labgrader")
    except Exception as e:  # nbformat raises many kinds for a damaged file; each is the same fault here
        raise UserError(f"the lab notebook {where} is damaged ({one_line(e, 160)}); reinstall labgrader")
    return nb


def is_added(cell) -> bool:
    """True for a cell the course added to the export (setup imports, Exercise 2's reconstruction)."""
    return bool(cell.get("metadata", {}).get("labgrader", {}).get(ADDED))


def export_cells(nb: nbformat.NotebookNode) -> list:
    """The cells of the course's export, in order, without the ones the course added."""
    return [c for c in nb.cells if not is_added(c)]

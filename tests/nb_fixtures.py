"""Student notebooks for the tests that grade in the real sandbox: write one from code cells, read what it printed."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook


def notebook(folder: Path, *sources: str) -> None:
    """FOLDER/lab7b.ipynb with one code cell per source."""
    folder.mkdir(parents=True)
    nbformat.write(new_notebook(cells=[new_code_cell(s) for s in sources]), folder / "lab7b.ipynb")


def printed(out: Path, student: str, marker: str) -> list[str]:
    """The rest of each stdout line of the student's executed notebook that starts with marker."""
    nb = nbformat.read(out / "executed" / f"{student}.ipynb", as_version=4)
    return [line[len(marker):] for cell in nb.cells for o in cell.get("outputs", []) if o.get("name") == "stdout"
            for line in o["text"].splitlines() if line.startswith(marker)]

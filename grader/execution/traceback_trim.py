"""The failing cell's traceback from an executed notebook, trimmed to the student's own code.

IPython stores one list entry per frame, ANSI-coloured. A student needs the frames of their
cells (and of their own modules), not forty frames inside torch or IPython, so library frames
are replaced by one line saying how many were hidden.

Cells are named as everywhere else (grader.common.text.cell_label): by position among the
student's code cells, the grader's setup cell not counted. IPython's `Cell In[n]` counts
executions (the setup cell first, empty cells skipped), so n is rewritten to that position.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from grader.common.text import cell_label
from grader.execution.runner import PREAMBLE_TAG

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
EXECUTION_REF = re.compile(r"(Cell In\s*\[|Input In\s*\[|<ipython-input-)(\d+)")
CELL_FRAME = re.compile(r"^\s*(Cell In\s*\[|Input In\s*\[|<ipython-input-)")
FILE_FRAME = re.compile(r"^\s*File \"?([^\"\n]+?)\"?(?::\d+|, line \d+)")
FRAME_START = re.compile(r"^\s*(Cell In\s*\[|Input In\s*\[|<ipython-input-|File \S)")
LIBRARY_PATH = re.compile(
    r"(site-packages|dist-packages|[\\/]lib[\\/]python\d+(\.\d+)?[\\/]|[\\/]IPython[\\/]|[\\/]ipykernel[\\/]"
    r"|^<frozen |^<string>|[\\/]Lib[\\/])"
)
HEADER = re.compile(r"^-{10,}$|Traceback \(most recent call last\)")
MAX_LINES = 200


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


def read_notebook(source: Any):
    """An nbformat notebook from a path or an already-read notebook; None when it cannot be read."""
    if source is None:
        return None
    if not isinstance(source, (str, Path)):
        return source
    try:
        import nbformat

        with open(source, encoding="utf-8") as f:
            return nbformat.read(f, as_version=4)
    except Exception:
        return None


def first_error(nb) -> tuple[int, dict] | None:
    """(cell index, error output) of the first code cell that raised; execution stops there.

    Anything else a hostile notebook carries (outputs on a markdown cell, outputs that are not a
    list, an error output that is not a mapping) is passed over.
    """
    cells = getattr(nb, "cells", None) or (nb.get("cells", []) if isinstance(nb, dict) else [])
    for index, cell in enumerate(cells if isinstance(cells, list) else []):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        outputs = cell.get("outputs")
        for output in outputs if isinstance(outputs, list) else []:
            if isinstance(output, dict) and output.get("output_type") == "error":
                return index, output
    return None


def trim_frames(traceback: list[str], ename: str = "", evalue: str = "") -> str:
    """Plain text of the traceback with library frames dropped; the error line always ends it."""
    blocks = _blocks([strip_ansi(str(t)) for t in traceback or []])
    kept, hidden = [], 0
    for block in blocks:
        first = block.splitlines()[0] if block.strip() else ""
        if HEADER.search(first) and not FRAME_START.match(first):
            continue
        if _is_library(first):
            hidden += 1
            continue
        if hidden:
            kept.append(_hidden_note(hidden))
            hidden = 0
        kept.append(block.rstrip("\n"))
    if hidden:
        kept.append(_hidden_note(hidden))
    error_line = f"{strip_ansi(ename)}: {strip_ansi(evalue)}".strip() if ename else ""
    text = "\n".join(kept)
    if error_line and error_line not in text:
        text = f"{text}\n{error_line}" if text else error_line
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        lines = lines[: MAX_LINES // 2] + [f"... ({len(lines) - MAX_LINES} lines cut) ..."] + lines[-MAX_LINES // 2:]
    return "\n".join(lines)


def student_cells(nb) -> tuple[dict[int, int], dict[int, int]]:
    """-> ({notebook index: student cell number}, {execution count: student cell number}) for the
    code cells of an executed notebook, the grader's setup cell(s) left out."""
    by_index, by_count, number = {}, {}, 0
    for index, cell in enumerate(getattr(nb, "cells", None) or nb.get("cells", [])):
        if cell.get("cell_type") != "code" or PREAMBLE_TAG in ((cell.get("metadata") or {}).get("tags") or []):
            continue
        number += 1
        by_index[index] = number
        count = cell.get("execution_count")
        if isinstance(count, int) and not isinstance(count, bool):
            by_count[count] = number
    return by_index, by_count


def renumber_cells(text: str, by_count: dict[int, int]) -> str:
    """IPython's execution counts in a traceback (`Cell In[5]`) replaced by the student's cell numbers."""
    def swap(m):
        number = by_count.get(int(m.group(2)))
        return f"{m.group(1)}{number}" if number is not None else m.group(0)
    return EXECUTION_REF.sub(swap, text)


def failing_cell(source: Any) -> dict | None:
    """{cell, label, ename, evalue, traceback (trimmed text)} of an executed notebook, or None.

    cell is the student's cell number (None when the grader's setup cell failed) and label how
    messages name it (`cell 4 «first line»`).
    """
    nb = read_notebook(source)
    if nb is None:
        return None
    found = first_error(nb)
    if found is None:
        return None
    index, output = found
    by_index, by_count = student_cells(nb)
    number = by_index.get(index)
    cells = getattr(nb, "cells", None) or nb.get("cells", [])
    label = cell_label(number, cells[index].get("source", "")) if number else "the setup cell labgrader adds before your first cell"
    ename, evalue = str(output.get("ename", "")), str(output.get("evalue", ""))
    traceback = output.get("traceback")
    return {
        "cell": number,
        "label": label,
        "ename": strip_ansi(ename),
        "evalue": strip_ansi(evalue),
        "traceback": renumber_cells(trim_frames(traceback if isinstance(traceback, list) else [], ename, evalue), by_count),
    }


def _blocks(entries: list[str]) -> list[str]:
    """One block per frame, also when a kernel flattened the frames into one string."""
    blocks = []
    for entry in entries:
        current: list[str] = []
        for line in entry.splitlines():
            if FRAME_START.match(line) and current:
                blocks.append("\n".join(current))
                current = []
            current.append(line)
        if current:
            blocks.append("\n".join(current))
    return blocks


def _is_library(first_line: str) -> bool:
    if CELL_FRAME.match(first_line):
        return False
    m = FILE_FRAME.match(first_line)
    return bool(m and LIBRARY_PATH.search(m.group(1)))


def _hidden_note(n: int) -> str:
    return f"    ... {n} frame{'s' if n != 1 else ''} in library code hidden ..."

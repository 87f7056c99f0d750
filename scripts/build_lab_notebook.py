"""Build the packaged lab notebook once, from the course's text export of lab 7b.

The export's cells stay as the course wrote them (grader/execution/labnotebook.py converts
them); the course adds, each marked in the cell's metadata (`labgrader.added`):
  - a setup cell with the spec's preamble (the names the export uses but never imports),
    so the notebook also runs in a student's own Jupyter;
  - Exercise 2's questions, which the export cuts off after their lead, as the course
    reconstructs them (the questions ex2.a-d of reference/specs/lab7b.toml);
  - an answers cell writing 7b_ex2.json, like the export's cell that writes 7b_ex1.json.

    .venv/bin/python scripts/build_lab_notebook.py PATH/TO/lab-7b-optimizing-neural-networks.txt \\
        [--out reference/lab/lab7b.ipynb]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader.common.atomic import write_text_atomic  # noqa: E402
from grader.execution.labnotebook import ADDED, NOTEBOOK_NAME, notebook_from_export  # noqa: E402
from reference.spec import load_spec  # noqa: E402

SETUP_NOTE = ("# Added by the course: the names this lab takes from earlier labs (fmnist_utils, torch, optim, plt).\n"
              "# The grader runs these lines before your first cell too.")

EX2_QUESTIONS = r"""## Exercise 2: questions (the course's reconstruction)

*The original notebook breaks off after the lead above. The questions below are the course's
reconstruction of Exercise 2, not the original text; they are what labgrader grades.*

Assume again you are allowed the given network for 10 epochs. Answer the following questions:

* a) What was the optimal $\eta$ (assuming $S$=128 and $\mu$=0.9) for the best test accuracy?
* b) What is the optimal $S$ (assuming $\eta$=0.1 and $\mu$=0.9) for the best test accuracy?
* c) Did more noise in SGD (a larger $\eta$ over $S$) give better test accuracy in your runs? Start with yes or no, then say why.
* d) How is the noise of SGD like dropout or batch normalization?

The best test accuracy of a run is the maximum of `H['test_acc']` over its epochs (the title `plot(H)` draws).
Write the learning rate as a number and the batch size as a whole number; write the other answers as text."""

EX2_ANSWERS = 'answers = {"a": "", "b": "", "c": "", "d": ""}\njson.dump(answers, open("7b_ex2.json", "w"))'


def _added(cell, why: str):
    cell.metadata["labgrader"] = {ADDED: why}
    return cell


def build(export_text: str) -> nbformat.NotebookNode:
    nb = notebook_from_export(export_text)
    cells = list(nb.cells)
    setup_at = next(i for i, c in enumerate(cells) if c.cell_type == "code")
    preamble = "\n".join(load_spec().preamble)
    cells.insert(setup_at, _added(new_code_cell(f"{SETUP_NOTE}\n{preamble}"),
                                  "setup: the spec's preamble, the imports the export relies on"))
    cells.append(_added(new_markdown_cell(EX2_QUESTIONS), "Exercise 2's questions, the course's reconstruction"))
    cells.append(_added(new_code_cell(EX2_ANSWERS), "Exercise 2's answers cell, like Exercise 1's"))
    for n, cell in enumerate(cells):
        cell["id"] = f"lab7b-{n:02d}"
    nb.cells = cells
    nb.metadata["labgrader"] = {
        "lab": "7b", "title": "Optimizing Neural Networks",
        "source": "the course's text export lab-7b-optimizing-neural-networks.txt, built by scripts/build_lab_notebook.py",
        "added_cells": "cells whose metadata has labgrader.added were added by the course; the others are the export's",
    }
    nbformat.validate(nb)
    return nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", help="the course's text export of the lab notebook")
    parser.add_argument("--out", default=str(ROOT / "reference" / "lab" / NOTEBOOK_NAME))
    args = parser.parse_args()
    try:
        text = Path(args.export).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        sys.exit(f"build_lab_notebook: cannot read {args.export}: {getattr(e, 'strerror', None) or e}")
    nb = build(text)
    write_text_atomic(args.out, nbformat.writes(nb) + "\n")
    print(f"wrote {args.out}: {sum(c.cell_type == 'code' for c in nb.cells)} code cells, "
          f"{sum(bool(c.metadata.get('labgrader')) for c in nb.cells)} added by the course")


if __name__ == "__main__":
    main()

"""Hostile notebooks through the real sandbox: a markdown cell carrying a malformed error output
beside two good students, and (slow) a few generated notebooks.

The markdown case is the one the runner itself must handle: it used to keep the submitted
outputs of non-code cells, and the feedback's failing-cell search then crashed the whole batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grader.cli import main
from grader_fixtures import RIGHT, write_artifact
from grader_fixtures import grade_json as grade

pytestmark = pytest.mark.sandbox

FAST = ["--cell-timeout", "120", "--timeout", "300", "--no-train-service"]
BAD_OUTPUT = {"output_type": "error", "ename": "E", "evalue": "v", "traceback": 7}


def good_notebook() -> dict:
    """A notebook that writes the right answers (for grader_fixtures' reference) without training."""
    code = "import json\n" + "\n".join(f"json.dump({data!r}, open({name!r}, 'w'))" for name, data in RIGHT.items())
    cell = nbformat.v4.new_code_cell(code)
    return json.loads(nbformat.writes(nbformat.v4.new_notebook(cells=[cell])))


def hostile_class(tmp_path: Path, cells: list[dict]) -> Path:
    """Two good students (ann, bob) and mallory: the good notebook with `cells` appended."""
    subs = tmp_path / "subs"
    for name in ("ann", "bob"):
        (subs / name).mkdir(parents=True)
        (subs / name / "lab7b.ipynb").write_text(json.dumps(good_notebook()), encoding="utf-8")
    nb = good_notebook()
    nb["cells"] += cells
    (subs / "mallory").mkdir()
    (subs / "mallory" / "lab7b.ipynb").write_text(json.dumps(nb, ensure_ascii=True), encoding="utf-8")
    return subs


def grade_twice(tmp_path: Path, subs: Path) -> dict:
    out = tmp_path / "out"
    ref = str(write_artifact(tmp_path / "ref.json"))
    code, summary = grade(str(subs), "--out", str(out), "--reference", ref, *FAST)
    assert code == 0
    got = {s["student"]: s for s in summary["students"]}
    assert set(got) == {"ann", "bob", "mallory"}
    assert got["ann"]["status"] == got["bob"]["status"] == "graded"
    assert got["ann"]["total"] == got["bob"]["total"] == 16
    assert (out / "summary.html").is_file()
    assert main(["export", str(out), "--to", "canvas"]) == 0 and (out / "export" / "canvas.csv").is_file()
    code, again = grade(str(subs), "--out", str(out), "--reference", ref, *FAST)
    assert code == 0 and again["graded_now"] == 0 and again["reused"] == 3
    return {"students": got, "out": out}


def test_a_markdown_cell_with_a_malformed_error_output_in_the_real_sandbox(tmp_path):
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": "the end", "outputs": [BAD_OUTPUT, 5]},
        {"cell_type": "code", "metadata": {}, "source": "raise ValueError('mallory stops here')",
         "outputs": [BAD_OUTPUT], "execution_count": 1},
    ]
    got = grade_twice(tmp_path, hostile_class(tmp_path, cells))
    mallory = got["students"]["mallory"]
    assert mallory["status"] == "error" and "mallory stops here" in mallory["reason"]
    executed = nbformat.read(got["out"] / "executed" / "mallory.ipynb", as_version=4)
    assert all("outputs" not in c for c in executed.cells if c.cell_type != "code")
    page = (got["out"] / "feedback" / "mallory.html").read_text(encoding="utf-8")
    assert "ValueError" in page


source = st.one_of(
    st.sampled_from(["print('\\udce9'.encode('utf-8', 'surrogateescape'))", "import sys; sys.stdout.write('\\x1b[2J\\r=1+1')",
                     "open('7b_ex1.json', 'w').write('{\"d\": \"\\\\ud800\"}')", "raise SystemExit(3)",
                     "import os; os.makedirs('/'.join(['d'] * 200))", "print('x' * 100000)"]),
    st.text(max_size=40),
)
generated_cells = st.lists(st.one_of(
    st.builds(lambda s: {"cell_type": "code", "metadata": {}, "source": s, "outputs": [BAD_OUTPUT], "execution_count": None}, source),
    st.builds(lambda s: {"cell_type": "markdown", "metadata": {}, "source": s, "outputs": [BAD_OUTPUT]}, st.text(max_size=20)),
    st.builds(lambda s: {"cell_type": "raw", "metadata": {}, "source": s, "execution_count": 3}, st.text(max_size=20)),
), min_size=1, max_size=3)


@pytest.mark.slow
@settings(max_examples=3, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(cells=generated_cells)
def test_generated_notebooks_in_the_real_sandbox(tmp_path_factory, cells):
    tmp_path = tmp_path_factory.mktemp("gen")
    got = grade_twice(tmp_path, hostile_class(tmp_path, cells))
    assert got["students"]["mallory"]["status"] in ("graded", "error", "timeout", "memory", "no-answers", "invalid-answers")

"""Property-based hostile input: generated student names, answer files and executed notebooks go
through the host-side stages (discovery, hashing, collection, validation, scoring, storing,
feedback, class report, exports) of a real `grade` run; no kernel runs (the fake executor hands
back the generated notebook as the executed one).

Whatever is generated: `grade` exits 0, every student has exactly one status, and every file it
and `export` write parses (JSON, CSV without formula cells, UTF-8 Markdown, HTML). The default
suite runs a few examples; `-m slow` runs many more. `--hypothesis-show-statistics` counts them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from grader import SCHEMA_DIR
from grader.cli import main
from grader.common.names import display
from grader_fixtures import RIGHT, install_fake_executor, notebook, write_artifact

FAST = settings(max_examples=8, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
LONG = settings(FAST, max_examples=200, derandomize=False)
RESULTS_SCHEMA = json.loads((SCHEMA_DIR / "results.schema.json").read_text())
NASTY = ["\udce9", "\udcff", "\n", "\r", "\t", "=", "-", "+", "@", "#", "[", "](", "*", "<", "&", "'", "\"", ",", "~",
         "\u202e", "\x1b[31m", "\x00", "/", "\ud800", "é", "😀", " "]

text = st.lists(st.one_of(st.characters(), st.sampled_from(NASTY)), max_size=30).map("".join)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text)
json_values = st.recursive(json_scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                               st.dictionaries(text, kids, max_size=4)), max_leaves=12)


def _folder_name(name: str) -> str:
    """The name as a folder can have it and discovery lists it: no slash or NUL, not hidden, at most
    255 bytes (a cut through a UTF-8 sequence leaves undecodable bytes: one more hostile case)."""
    name = "".join("_" if c in "/\0" else c for c in name if not ("\ud800" <= c <= "\udfff") or "\udc80" <= c <= "\udcff")
    if not name or name.startswith(".") or name in ("__MACOSX", "__pycache__"):
        name = "s" + name
    return os.fsdecode(os.fsencode(name)[:255])


names = st.one_of(text, st.sampled_from(["-ana", "@bob", "=x", "a" * 250, "jos\udce9", "x\n# h"]),
                  st.text(min_size=200, max_size=260)).map(_folder_name)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


answer_bytes = st.one_of(
    st.builds(lambda d: json.dumps(d, ensure_ascii=True).encode(),
              st.fixed_dictionaries({}, optional={k: json_values for k in ("a", "b", "c", "d")})),
    st.builds(lambda d: json.dumps(d, ensure_ascii=True).encode(), json_values),
    st.builds(lambda d, k: json.dumps({k: d}).encode().replace(b'"@@"', _nested(900).encode()),
              st.just("@@"), st.sampled_from(["a", "d", "zz"])),
    st.binary(max_size=200),
    st.just(json.dumps(RIGHT["7b_ex1.json"]).encode()),
)

outputs = st.lists(st.one_of(
    json_values,
    st.fixed_dictionaries({"output_type": st.sampled_from(["error", "stream", "display_data", "execute_result"])},
                          optional={"ename": json_values, "evalue": json_values, "traceback": json_values,
                                    "text": json_values, "name": json_values, "data": json_values}),
), max_size=4)
cells = st.lists(st.fixed_dictionaries(
    {"cell_type": st.sampled_from(["code", "markdown", "raw", "bogus"]), "source": st.one_of(text, json_values)},
    optional={"outputs": st.one_of(outputs, json_values), "metadata": json_values, "execution_count": json_values}),
    max_size=5)


@st.composite
def students(draw, min_size=1, max_size=3):
    chosen = draw(st.lists(names, min_size=min_size, max_size=max_size, unique_by=lambda n: os.fsencode(n)))
    files = st.dictionaries(st.sampled_from(["7b_ex1.json", "7b_ex2.json"]), answer_bytes, max_size=2)
    return [(n, draw(files)) for n in chosen]


@pytest.fixture
def no_figures(monkeypatch, ref):
    """Plots are matplotlib's business and slow, and the reference is checked once, not per example;
    every other byte of the reports is rendered."""
    import grader.grade
    import grader.reports.feedback_html as fh
    import grader.reports.summary as summary
    from grader.assessment.reference_io import reference_for
    from reference.spec import load_spec

    loaded = reference_for(str(ref), load_spec(None), lambda line: None)
    monkeypatch.setattr(grader.grade, "reference_for", lambda *a, **k: loaded)
    monkeypatch.setattr(fh, "optimum_plot", lambda *a, **k: None)
    monkeypatch.setattr(summary, "_histogram_png", lambda *a, **k: "")
    monkeypatch.setattr(summary, "_distribution_png", lambda *a, **k: "")


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> Path:
    return write_artifact(tmp_path_factory.mktemp("ref") / "ref.json")


def _mkdir(parent: Path, name: str) -> Path:
    path = os.fsencode(str(parent)) + b"/" + os.fsencode(name)
    os.mkdir(path)
    return Path(os.fsdecode(path))


def grade_and_check(root: Path, ref: Path, expected: list[str], *extra: str) -> dict:
    """Run grade and every export; assert one status per student and that every output parses."""
    out = root / "out"
    buf = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        code = main(["grade", str(root / "subs"), "--out", str(out), "--reference", str(ref), "--json", *extra])
    assert code == 0
    summary = json.loads(buf.getvalue())
    doc = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert list(Draft202012Validator(RESULTS_SCHEMA).iter_errors(doc)) == []
    assert sorted(r["student"] for r in doc["students"]) == sorted(display(n) for n in expected)
    assert len({r["file"] for r in doc["students"]}) == len(expected)
    statuses = [r["status"] for r in doc["students"]]
    assert all(s in ("graded", "error", "timeout", "memory", "no-answers", "invalid-answers") for s in statuses)
    assert sum(summary["counts"].values()) == len(expected)
    rows = list(csv.DictReader(io.StringIO(_raw_text(out / "grades.csv"))))
    assert len(rows) == len(expected)
    for r in doc["students"]:
        (out / "feedback" / f"{r['file']}.md").read_text(encoding="utf-8")
        _parse_html((out / "feedback" / f"{r['file']}.html").read_text(encoding="utf-8"))
        assert "\n" not in r["reason"] and "\r" not in r["reason"]
    json.loads((out / "summary.json").read_text(encoding="utf-8"))
    _parse_html((out / "summary.html").read_text(encoding="utf-8"))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        for target in ("canvas", "moodle", "gradescope"):
            assert main(["export", str(out), "--to", target]) == 0
    for name in ("canvas.csv", "moodle.csv"):
        table = list(csv.reader(io.StringIO(_raw_text(out / "export" / name))))
        assert len(table) == 1 + len(expected) + (name == "canvas.csv")
        for row in table:
            assert not any(c.startswith(("=", "+", "-", "@", "\t", "\r")) and not _number(c) for c in row), row
    for r in doc["students"]:
        json.loads((out / "export" / "gradescope" / r["file"] / "results.json").read_text(encoding="utf-8"))
    return doc


def _raw_text(path: Path) -> str:
    """A CSV file's text with its line ends as written (a lone \r inside a quoted cell stays one)."""
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _parse_html(text: str) -> None:
    parser = HTMLParser()
    parser.feed(text)
    parser.close()
    assert text.lstrip().lower().startswith("<!doctype html")


def _answer_class(root: Path, drawn) -> list[str]:
    subs = root / "subs"
    subs.mkdir()
    for name, files in drawn:
        folder = _mkdir(subs, name)
        for fname, data in files.items():
            (folder / fname).write_bytes(data)
    return [n for n, _ in drawn]


def _check_answer_class(drawn, ref):
    root = Path(tempfile.mkdtemp(prefix="hyp-"))
    try:
        expected = _answer_class(root, drawn)
        doc = grade_and_check(root, ref, expected, "--no-execute")
        code = main(["grade", str(root / "subs"), "--out", str(root / "out"), "--reference", str(ref), "--no-execute"])
        assert code == 0
        again = json.loads((root / "out" / "results.json").read_text(encoding="utf-8"))
        assert [r["status"] for r in again["students"]] == [r["status"] for r in doc["students"]]
    finally:
        shutil.rmtree(root, ignore_errors=True)


@FAST
@given(drawn=students())
def test_generated_answer_files_and_names_never_break_the_batch(drawn, ref, no_figures, capsys):
    _check_answer_class(drawn, ref)


@pytest.mark.slow
@LONG
@given(drawn=students(max_size=5))
def test_generated_answer_files_and_names_never_break_the_batch_long(drawn, ref, no_figures, capsys):
    _check_answer_class(drawn, ref)


def _check_notebook_class(drawn, ref, monkeypatch):
    root = Path(tempfile.mkdtemp(prefix="hyp-"))
    try:
        subs = root / "subs"
        subs.mkdir()
        for name, nb_cells, status, reason, write in drawn:
            folder = _mkdir(subs, name)
            path = notebook(folder / "lab7b.ipynb", {"status": status, "reason": reason, "cell": 1,
                                                     "write": {k: v.decode("latin-1") for k, v in write.items()}})
            nb = json.loads(path.read_text())
            nb["cells"] += nb_cells
            path.write_text(json.dumps(nb, ensure_ascii=True))
        calls = install_fake_executor(monkeypatch)
        grade_and_check(root, ref, [d[0] for d in drawn])
        assert len(calls) == len(drawn)
        grade_and_check(root, ref, [d[0] for d in drawn])
        assert len(calls) == len(drawn)
    finally:
        shutil.rmtree(root, ignore_errors=True)


notebook_students = st.lists(
    st.tuples(names, cells, st.sampled_from(["ok", "error", "timeout", "memory", "died"]), text,
              st.dictionaries(st.sampled_from(["7b_ex1.json", "7b_ex2.json"]), answer_bytes, max_size=2)),
    min_size=1, max_size=3, unique_by=lambda t: os.fsencode(t[0]))


@FAST
@given(drawn=notebook_students)
def test_generated_executed_notebooks_never_break_the_batch(drawn, ref, no_figures, monkeypatch, capsys):
    with monkeypatch.context() as m:
        _check_notebook_class(drawn, ref, m)


@pytest.mark.slow
@LONG
@given(drawn=notebook_students)
def test_generated_executed_notebooks_never_break_the_batch_long(drawn, ref, no_figures, monkeypatch, capsys):
    with monkeypatch.context() as m:
        _check_notebook_class(drawn, ref, m)

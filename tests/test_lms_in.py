"""LMS downloads -> per-student folders: Canvas, Moodle, plain folders, and untrusted zips."""

import io
import json
import os
import stat
import uuid
import zipfile
from pathlib import Path

import pytest

from grader.common.errors import UserError
from grader.lms.lms_in import UnpackLimits, canonical_name, detect_layout, materialize, safe_extract

KNOWN = {"7b_ex1.json", "7b_ex2.json"}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def make_zip(path: Path, entries: list[tuple[str, bytes, int]]) -> Path:
    """entries: (name, data, unix mode incl. file type; 0 = none recorded)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            if mode:
                info.create_system = 3
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


@pytest.fixture
def canvas(tmp_path):
    d = tmp_path / "canvas"
    write(d / "doejane_123_456_lab7b.ipynb", "{}")
    write(d / "doejane_123_456_7b_ex1.json", '{"a": "0.1"}')
    write(d / "smithbob_LATE_789_1011_7b_ex1-1.json", '{"a": "late, re-uploaded"}')
    write(d / "smithbob_LATE_789_1011_7b_ex2.json", '{"a": "0.03"}')
    write(d / "notes.txt", "not from Canvas")
    return d


def test_canvas_flat_layout_with_late_and_reupload_suffix(canvas, tmp_path):
    assert detect_layout(canvas) == "canvas"
    subs, entries, refused = materialize(canvas, "auto", tmp_path / "work", known_names=KNOWN)
    by = {e.student: e for e in entries}
    assert set(by) == {"doejane_123", "smithbob_789"}
    assert (by["doejane_123"].lms_user_id, by["doejane_123"].late, by["doejane_123"].display_name) == ("123", False, "doejane")
    assert (by["smithbob_789"].lms_user_id, by["smithbob_789"].late) == ("789", True)
    assert tree(subs / "doejane_123") == {"lab7b.ipynb", "7b_ex1.json"}
    assert tree(subs / "smithbob_789") == {"7b_ex1.json", "7b_ex2.json"}
    assert (subs / "smithbob_789" / "7b_ex1.json").read_text() == '{"a": "late, re-uploaded"}'
    assert by["smithbob_789"].files == subs / "smithbob_789"
    assert [r.entry for r in refused] == ["notes.txt"] and "Canvas" in refused[0].reason
    lms = json.loads((tmp_path / "work" / "lms.json").read_text())
    assert lms["layout"] == "canvas"
    assert lms["students"]["smithbob_789"] == {"display_name": "smithbob", "lms_user_id": "789", "late": True}


def test_a_canvas_reupload_replaces_the_older_file(tmp_path):
    d = tmp_path / "dl"
    write(d / "leeann_5_6_7b_ex1.json", "old")
    write(d / "leeann_5_6_7b_ex1-1.json", "newer")
    write(d / "leeann_5_6_7b_ex1-2.json", "newest")
    subs, entries, refused = materialize(d, "canvas", tmp_path / "work", known_names=KNOWN)
    assert (subs / "leeann_5" / "7b_ex1.json").read_text() == "newest"
    assert sorted(r.entry for r in refused) == ["leeann_5_6_7b_ex1-1.json", "leeann_5_6_7b_ex1.json"]
    assert all("superseded" in r.reason for r in refused)


def test_canonical_name_strips_only_suffixes_after_an_expected_stem():
    assert canonical_name("7b_ex1-1.json", KNOWN) == ("7b_ex1.json", 1)
    assert canonical_name("7b_ex2-12.json", KNOWN) == ("7b_ex2.json", 12)
    assert canonical_name("lab7b-3.ipynb", KNOWN) == ("lab7b.ipynb", 3)
    assert canonical_name("results-2.json", KNOWN) == ("results-2.json", 0)
    assert canonical_name("7b_ex1.json", KNOWN) == ("7b_ex1.json", 0)


def test_moodle_folders(tmp_path):
    d = tmp_path / "moodle"
    write(d / "Jane Doe_1234_assignsubmission_file_" / "lab7b.ipynb", "{}")
    write(d / "Jane Doe_1234_assignsubmission_file_" / "7b_ex1.json", "{}")
    write(d / "José Ñúñez_99_assignsubmission_file_" / "work" / "lab.ipynb", "{}")
    write(d / "Bob Roe_55_assignsubmission_onlinetext_" / "onlinetext.html", "<p>hi</p>")
    assert detect_layout(d) == "moodle"
    subs, entries, refused = materialize(d, "auto", tmp_path / "work", known_names=KNOWN)
    by = {e.student: e for e in entries}
    assert set(by) == {"jane-doe_1234", "jose-nunez_99"}
    assert (by["jane-doe_1234"].display_name, by["jane-doe_1234"].lms_user_id) == ("Jane Doe", "1234")
    assert tree(subs / "jane-doe_1234") == {"lab7b.ipynb", "7b_ex1.json"}
    assert tree(subs / "jose-nunez_99") == {"work/lab.ipynb"}
    assert len(refused) == 1 and "onlinetext" in refused[0].reason


def test_plain_folders_and_lone_notebooks(tmp_path):
    d = tmp_path / "class"
    write(d / "alice" / "lab7b.ipynb", "{}")
    write(d / "alice" / "src" / "helpers.py", "x = 1")
    write(d / "alice" / ".ipynb_checkpoints" / "lab7b-checkpoint.ipynb", "{}")
    write(d / "bob.ipynb", "{}")
    write(d / "readme.txt", "loose")
    assert detect_layout(d) == "folders"
    subs, entries, refused = materialize(d, "auto", tmp_path / "work")
    assert sorted(e.student for e in entries) == ["alice", "bob"]
    assert all(e.lms_user_id is None and not e.late for e in entries)
    assert tree(subs / "alice") == {"lab7b.ipynb", "src/helpers.py"}
    assert tree(subs / "bob") == {"bob.ipynb"}
    assert [r.entry for r in refused] == ["readme.txt"]


def test_links_in_an_unpacked_folder_are_refused_not_followed(tmp_path):
    secret = write(tmp_path / "secret.txt", "instructor only")
    d = tmp_path / "class"
    write(d / "alice" / "lab7b.ipynb", "{}")
    os.symlink(secret, d / "alice" / "7b_ex1.json")
    os.symlink(tmp_path, d / "alice" / "up")
    os.symlink(d / "alice", d / "mallory")
    subs, entries, refused = materialize(d, "folders", tmp_path / "work")
    assert [e.student for e in entries] == ["alice"]
    assert tree(subs / "alice") == {"lab7b.ipynb"}
    assert {r.entry: r.reason for r in refused} == {
        "alice/7b_ex1.json": "symbolic link (not followed)",
        "alice/up": "symbolic link (not followed)",
        "mallory": "symbolic link (not followed)",
    }


def test_a_rerun_rebuilds_the_folders_from_scratch(tmp_path):
    d = tmp_path / "class"
    write(d / "alice" / "lab7b.ipynb", "{}")
    extra = write(d / "alice" / "7b_ex1.json", "{}")
    work = tmp_path / "work"
    materialize(d, "folders", work)
    extra.unlink()
    subs, _, _ = materialize(d, "folders", work)
    assert tree(subs) == {"alice/lab7b.ipynb"}


def test_a_zip_with_escaping_absolute_and_link_entries(tmp_path):
    absolute = f"/tmp/labgrader-evil-{uuid.uuid4().hex}.ipynb"
    z = make_zip(tmp_path / "class.zip", [
        ("alice/lab7b.ipynb", b"{}", 0o100644),
        ("alice/7b_ex1.json", b'{"a": "0.1"}', 0),
        ("../evil.ipynb", b"escape", 0o100644),
        ("alice/../../evil2.ipynb", b"escape", 0o100644),
        (absolute, b"absolute", 0o100644),
        ("alice/7b_ex2.json", b"/etc/passwd", stat.S_IFLNK | 0o777),
        ("bob/tty", b"", stat.S_IFCHR | 0o600),
        ("bob/lab.ipynb", b"{}", 0o100644),
    ])
    work = tmp_path / "work"
    subs, entries, refused = materialize(z, "auto", work)
    reasons = {r.entry: r.reason for r in refused}
    assert reasons == {
        "../evil.ipynb": "escapes the target folder (..)",
        "alice/../../evil2.ipynb": "escapes the target folder (..)",
        absolute: "absolute path",
        "alice/7b_ex2.json": "symbolic link",
        "bob/tty": "device file",
    }
    assert sorted(e.student for e in entries) == ["alice", "bob"]
    assert tree(subs / "alice") == {"lab7b.ipynb", "7b_ex1.json"}
    assert tree(subs / "bob") == {"lab.ipynb"}
    assert not (tmp_path / "evil.ipynb").exists() and not (work / "evil.ipynb").exists()
    assert not os.path.lexists(absolute)
    assert not any(p.is_symlink() for p in work.rglob("*"))
    assert json.loads((work / "lms.json").read_text())["refused"][0]["reason"]


def test_a_canvas_zip_inside_a_wrapper_folder_is_detected(tmp_path):
    z = make_zip(tmp_path / "submissions.zip", [
        ("submissions/doejane_123_456_lab7b.ipynb", b"{}", 0),
        ("submissions/roebob_LATE_7_8_7b_ex2-1.json", b"{}", 0),
    ])
    assert detect_layout(z) == "canvas"
    subs, entries, refused = materialize(z, "auto", tmp_path / "work", known_names=KNOWN)
    assert {(e.student, e.late) for e in entries} == {("doejane_123", False), ("roebob_7", True)}
    assert tree(subs / "roebob_7") == {"7b_ex2.json"}
    assert refused == []


def test_zip_bombs_are_refused_whole_with_a_clear_reason(tmp_path):
    many = make_zip(tmp_path / "many.zip", [(f"s{i}/a.ipynb", b"{}", 0) for i in range(5)])
    with pytest.raises(UserError, match=r"5 entries, over the limit of 3 \(a zip bomb\?\)"):
        safe_extract(many, tmp_path / "x", UnpackLimits(max_entries=3))
    big = make_zip(tmp_path / "big.zip", [("s/a.ipynb", b"0" * 100_000, 0)])
    with pytest.raises(UserError, match=r"uncompressed, over the limit .*zip bomb"):
        safe_extract(big, tmp_path / "y", UnpackLimits(max_bytes=1000))


def test_a_zip_that_lies_about_its_sizes_is_stopped_while_extracting(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("s/a.ipynb", b"0" * 5000)
    raw = bytearray(buf.getvalue())
    # shrink the declared size in the central directory only; the local header keeps the truth
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24:cd + 28] = (10).to_bytes(4, "little")
    lying = tmp_path / "lying.zip"
    lying.write_bytes(bytes(raw))
    refused = safe_extract(lying, tmp_path / "z", UnpackLimits(max_bytes=1000))
    assert [r.entry for r in refused] == ["s/a.ipynb"] and refused[0].reason.startswith("corrupt entry")
    assert not (tmp_path / "z" / "s" / "a.ipynb").exists()


def test_explicit_layout_and_a_lone_notebook(tmp_path):
    nb = write(tmp_path / "carol.ipynb", "{}")
    subs, entries, refused = materialize(nb, "auto", tmp_path / "work")
    assert [(e.student, e.files) for e in entries] == [("carol", subs / "carol")]
    with pytest.raises(UserError, match="--layout blackboard"):
        materialize(nb, "blackboard", tmp_path / "work")
    with pytest.raises(UserError, match="no such file"):
        materialize(tmp_path / "nope", "auto", tmp_path / "work")


def test_a_zipped_class_folder_is_unwrapped(tmp_path):
    z = make_zip(tmp_path / "class.zip", [("lab7b-class/alice/lab.ipynb", b"{}", 0),
                                          ("lab7b-class/bob/lab.ipynb", b"{}", 0)])
    subs, entries, refused = materialize(z, "folders", tmp_path / "work")
    assert sorted(e.student for e in entries) == ["alice", "bob"] and refused == []


# a zipped class graded like the same folder unzipped ------------------------------------------

@pytest.fixture
def no_figures(monkeypatch):
    """Plots are matplotlib's business and slow; every other byte of the reports is written."""
    import grader.reports.feedback_html as fh
    import grader.reports.summary as summary

    monkeypatch.setattr(fh, "optimum_plot", lambda *a, **k: None)
    monkeypatch.setattr(summary, "_histogram_png", lambda *a, **k: "")
    monkeypatch.setattr(summary, "_distribution_png", lambda *a, **k: "")


def _grade(source: Path, out: Path, ref: Path, capsys) -> tuple[dict, str]:
    """`grade SOURCE --no-execute`: {student: (status, total, file)} and stderr."""
    from grader.cli import main

    assert main(["grade", str(source), "--out", str(out), "--reference", str(ref), "--no-execute"]) == 0
    err = capsys.readouterr().err
    doc = json.loads((out / "results.json").read_text())
    return {s["student"]: (s["status"], s["total"], s["file"]) for s in doc["students"]}, err


def _answers(which: str) -> dict[str, bytes]:
    """Hand-written answer files: both right (16 points) or only 7b_ex1.json (8)."""
    from grader_fixtures import RIGHT

    names = ["7b_ex1.json", "7b_ex2.json"] if which == "both" else ["7b_ex1.json"]
    return {n: json.dumps(RIGHT[n]).encode() for n in names}


COLLIDING = {"Ann Lee": "both", "ann-lee": "ex1", "李雷": "both", "王芳": "ex1",
             "Zoë": "both", "Zoe": "ex1", "-ana": "ex1", "ana": "both"}


def test_a_zipped_class_keeps_exact_names_that_normalise_alike(tmp_path, capsys, no_figures):
    from grader_fixtures import write_artifact

    ref = write_artifact(tmp_path / "ref.json")
    entries = [(f"class/{n}/{f}", data, 0) for n, which in COLLIDING.items() for f, data in _answers(which).items()]
    z = make_zip(tmp_path / "class.zip", entries)
    zipped, err = _grade(z, tmp_path / "out-zip", ref, capsys)
    assert "refused" not in err
    expected = {n: ("graded", 16 if which == "both" else 8) for n, which in COLLIDING.items()}
    assert {n: r[:2] for n, r in zipped.items()} == expected
    assert len({r[2] for r in zipped.values()}) == len(COLLIDING)
    with zipfile.ZipFile(z) as zf:
        zf.extractall(tmp_path / "unzipped")
    folder, err = _grade(tmp_path / "unzipped" / "class", tmp_path / "out-dir", ref, capsys)
    assert folder == zipped and "refused" not in err


def test_a_zipped_class_with_a_loose_file_is_still_a_class(tmp_path):
    z = make_zip(tmp_path / "class.zip", [("class/ada/7b_ex1.json", b"{}", 0), ("class/ada/7b_ex2.json", b"{}", 0),
                                          ("class/ben/7b_ex1.json", b"{}", 0), ("class/README.txt", b"hi", 0)])
    subs, entries, refused = materialize(z, "auto", tmp_path / "work", known_names=KNOWN)
    assert sorted(e.student for e in entries) == ["ada", "ben"]
    assert [r.entry for r in refused] == ["README.txt"] and "loose file" in refused[0].reason
    assert tree(subs / "ben") == {"7b_ex1.json"}


@pytest.mark.parametrize("files", [["alice/lab7b.ipynb", "alice/src/helpers.py", "alice/README.md"],
                                   ["alice/7b_ex1.json", "alice/7b_ex2.json", "alice/notes/todo.txt"]])
def test_a_zip_of_one_student_s_folder_stays_one_student(tmp_path, files):
    z = make_zip(tmp_path / "alice.zip", [(f, b"{}", 0) for f in files])
    subs, entries, refused = materialize(z, "auto", tmp_path / "work", known_names=KNOWN)
    assert [e.student for e in entries] == ["alice"] and refused == []
    assert tree(subs / "alice") == {f.removeprefix("alice/") for f in files}


def test_an_over_long_name_in_a_zip_is_refused_and_the_rest_unpacked(tmp_path):
    long = "L" * 300
    z = make_zip(tmp_path / "class.zip", [(f"class/{long}/", b"", stat.S_IFDIR | 0o755),
                                          (f"class/{long}/7b_ex1.json", b"{}", 0),
                                          (f"class/{'M' * 300}", b"{}", 0),
                                          ("class/ok/7b_ex1.json", b"{}", 0), ("class/ok2/7b_ex1.json", b"{}", 0)])
    subs, entries, refused = materialize(z, "auto", tmp_path / "work", known_names=KNOWN)
    assert sorted(e.student for e in entries) == ["ok", "ok2"]
    assert {r.entry: r.reason for r in refused} == {
        f"class/{long}/": "a name in its path is longer than 255 bytes",
        f"class/{long}/7b_ex1.json": "a name in its path is longer than 255 bytes",
        f"class/{'M' * 300}": "a name in its path is longer than 255 bytes",
    }


def test_a_folder_and_a_notebook_of_one_student_in_a_zip_is_said_as_in_a_folder(tmp_path):
    z = make_zip(tmp_path / "class.zip", [("class/ben/7b_ex1.json", b"{}", 0), ("class/ben.ipynb", b"{}", 0),
                                          ("class/cat/7b_ex1.json", b"{}", 0)])
    subs, entries, refused = materialize(z, "auto", tmp_path / "work", known_names=KNOWN)
    assert sorted(e.student for e in entries) == ["ben", "cat"] and tree(subs / "ben") == {"7b_ex1.json"}
    assert refused == [("ben.ipynb", "student 'ben' has both a folder and a notebook; the folder is graded, keep one")]

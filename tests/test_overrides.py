import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from fakes import GOOD_ANSWERS, WRONG_ANSWERS, fake_result
from grader.common.errors import UserError
from grader.assessment.overrides import Override, apply_overrides, by_student, load_overrides

STUDENTS = ["ann", "bob", "dan"]


@pytest.fixture
def write(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def write(text: str, encoding: str = "utf-8") -> str:
        (tmp_path / "overrides.csv").write_bytes(text.encode(encoding) if isinstance(text, str) else text)
        return "overrides.csv"
    return write


def test_reads_bom_spaces_quotes_and_blank_lines(sp, write):
    path = write("\ufeff Student , QUESTION,points , comment\n"
                 "ann, ex1.d, 1.5, \"Good, but name the noise\"\n"
                 "\n"
                 "  bob ,ex2.a,0,\n"
                 "dan,ex1.a,2\n")
    got = load_overrides(path, STUDENTS, sp)
    assert got == [Override("ann", "ex1.d", 1.5, "Good, but name the noise", 2),
                   Override("bob", "ex2.a", 0.0, "", 4),
                   Override("dan", "ex1.a", 2.0, "", 5)]
    assert load_overrides(path, STUDENTS, {q.id: q.points for q in sp.questions}) == got
    assert by_student(got)["ann"] == [got[0]]


@pytest.mark.parametrize("rows, message", [
    ("ann,ex1.a,1,ok\nbob,ex1.a,1,ok\nzed,ex1.a,1,hi\n", "overrides.csv:4: unknown student 'zed'"),
    ("ann,ex9.z,1,\n", "overrides.csv:2: unknown question 'ex9.z'"),
    ("ann,ex1.a,lots,\n", "overrides.csv:2: points 'lots' is not a number"),
    ("ann,ex1.a,nan,\n", "overrides.csv:2: points 'nan' is not a number"),
    ("ann,ex1.a,,\n", "overrides.csv:2: points '' is not a number"),
    ("ann,ex1.a,-1,\n", "overrides.csv:2: points -1 is negative"),
    ("ann,ex1.a,2.5,\n", "overrides.csv:2: points 2.5 is more than the 2 of ex1.a"),
    ("ann,ex1.a,1,\n\nann,ex1.a,2,\n", "overrides.csv:4: a second override for 'ann' ex1.a (first on line 2)"),
    ("ann,ex1.a,1,a,b\n", "overrides.csv:2: 5 columns"),
    ("ann,ex1.a\n", "overrides.csv:2: expected student,question,points[,comment]"),
    ('ann,ex1.a,1,"multi\nline"\nzed,ex1.a,1,\n', "overrides.csv:4: unknown student 'zed'"),
])
def test_bad_rows_name_the_line(sp, write, rows, message):
    path = write("student,question,points,comment\n" + rows)
    with pytest.raises(UserError) as e:
        load_overrides(path, STUDENTS, sp)
    assert str(e.value).startswith(message)
    assert e.value.exit_code == 2 and "\n" not in str(e.value)


@pytest.mark.parametrize("content, message", [
    ("name,q,pts\nann,ex1.a,1\n", "overrides.csv:1: the header must be student,question,points,comment"),
    ("", "overrides.csv: empty"),
    (b"student,question,points,comment\nann,ex1.a,1,caf\xe9\n", "overrides.csv: is not UTF-8 text"),
])
def test_bad_files(sp, write, content, message):
    path = write(content)
    with pytest.raises(UserError, match="^" + message.replace("(", r"\(")):
        load_overrides(path, STUDENTS, sp)


def test_missing_file(sp, tmp_path):
    with pytest.raises(UserError, match="no such overrides file"):
        load_overrides(tmp_path / "nope.csv", STUDENTS, sp)


def test_apply_replaces_points_and_recomputes_total_and_review(sp, ref):
    result = fake_result("ann", GOOD_ANSWERS, sp=sp, ref=ref)
    before = repr(result)
    assert result["total"] == 14.0 and result["review"] is True
    overrides = [Override("ann", "ex1.d", 0.5, "too vague", 2), Override("ann", "ex1.a", 0.0, "copied", 3),
                 Override("bob", "ex2.a", 2.0, "not mine", 4)]
    out = apply_overrides(result, overrides, sp)
    assert repr(result) == before
    d, a = out["questions"]["ex1.d"], out["questions"]["ex1.a"]
    assert (d["points"], d["verdict"], d["review"], d["override"]) == (0.5, "partly", False,
                                                                        {"points": 0.5, "comment": "too vague"})
    assert (a["points"], a["verdict"], a["override"]["comment"]) == (0.0, "wrong", "copied")
    assert out["questions"]["ex2.a"] == result["questions"]["ex2.a"]
    assert out["total"] == 14.0 - 2.0 - 1.5
    assert out["review"] is True

    rest = [Override("ann", q, 2.0, "fine", 9) for q in ("ex1.b", "ex2.c", "ex2.d")]
    done = apply_overrides(out, rest, sp)
    assert done["review"] is False
    assert all(done["questions"][q]["verdict"] == "right" for q in ("ex1.b", "ex2.c", "ex2.d"))
    assert done["total"] == out["total"] + 1 + 1 + 0


def test_apply_without_own_overrides_returns_an_equal_copy(sp, ref):
    result = fake_result("bob", WRONG_ANSWERS, sp=sp, ref=ref)
    out = apply_overrides(result, [Override("ann", "ex1.a", 1.0, "", 2)], sp)
    assert out == result and out is not result


def test_apply_to_a_failed_run_creates_the_entry(sp, ref):
    failed = fake_result("dan", {}, sp=sp, ref=ref, status="error", reason="cell 3 raised")
    out = apply_overrides(failed, [Override("dan", "ex1.d", 1.0, "explained in person", 2)], sp)
    assert out["total"] == 1.0 and out["status"] == "error"
    entry = out["questions"]["ex1.d"]
    assert (entry["points"], entry["max"], entry["verdict"]) == (1.0, 2.0, "partly")
    assert entry["override"]["comment"] == "explained in person"
    assert failed["questions"] == {}


def test_applied_result_still_fits_the_results_schema(sp, ref):
    schema = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "results.schema.json").read_text())
    student = Draft202012Validator({"$defs": schema["$defs"], "$ref": "#/$defs/student"})
    result = fake_result("ann", GOOD_ANSWERS, sp=sp, ref=ref)
    assert list(student.iter_errors(result)) == []
    out = apply_overrides(result, [Override("ann", "ex1.d", 1.0, "see me", 2)], sp)
    assert [e.message for e in student.iter_errors(out)] == []

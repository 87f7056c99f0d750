"""Answer files: the schemas accept what the notebook writes and reject the rest in one plain line."""

import json
import os

import pytest

from grader.common.errors import UserError
from grader.assessment.validate import YesNo, answer_kinds, load_schema, parse_answers, read_answer_file, validate_answers
from reference.spec import load_spec

EX1, EX2 = "7b_ex1.json", "7b_ex2.json"


def test_schemas_match_the_spec():
    spec = load_spec()
    for name in spec.answer_files:
        schema = load_schema(name)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["additionalProperties"] is False
        kinds = answer_kinds(name)
        assert sorted(kinds) == sorted(q.key for q in spec.questions_in(name))
        for q in spec.questions_in(name):
            if q.kind == "optimum":
                integer = spec.sweeps[q.sweep].vary == "batch_size"
                assert kinds[q.key] == ("integer" if integer else "number"), q.id
            else:
                assert kinds[q.key] == q.kind, q.id


def test_the_notebooks_blank_template_is_valid_and_unanswered():
    data = {"a": "", "b": "", "c": "", "d": ""}
    assert validate_answers(EX1, data) == []
    assert all(not a.answered and a.error is None for a in parse_answers(EX1, data).values())


@pytest.mark.parametrize("value, expected", [
    ("0.1", 0.1), ("1e-1", 0.1), (".1", 0.1), (" 0.1 ", 0.1), ("+0.2", 0.2), (0.1, 0.1), (1, 1.0), ("3E-2", 0.03),
])
def test_numeric_answers_accept_numbers_and_numeric_strings(value, expected):
    assert validate_answers(EX1, {"a": value}) == []
    assert parse_answers(EX1, {"a": value})["a"].value == pytest.approx(expected)


@pytest.mark.parametrize("value, expected", [(" 128 ", 128), ("64", 64), (32, 32), ("128.0", 128), (256.0, 256)])
def test_batch_size_answers_accept_integers_and_integer_strings(value, expected):
    assert validate_answers(EX1, {"c": value}) == []
    parsed = parse_answers(EX1, {"c": value})["c"].value
    assert parsed == expected and isinstance(parsed, int)


@pytest.mark.parametrize("value, yes, reason", [
    ("Yes, because the model underfits", True, "because the model underfits"),
    ("no", False, ""),
    ("NO. It overfits.", False, "It overfits."),
    ("  yes: generalization gap", True, "generalization gap"),
    (True, True, ""),
    (False, False, ""),
])
def test_yes_no_answers_accept_text_starting_with_yes_or_no_and_booleans(value, yes, reason):
    assert validate_answers(EX1, {"b": value}) == []
    assert parse_answers(EX1, {"b": value})["b"].value == YesNo(yes, reason)


def test_free_text_is_kept_and_null_or_blank_is_not_answered():
    parsed = parse_answers(EX2, {"a": None, "b": "   ", "d": "  noise regularizes  "})
    assert parsed["a"].value is None and parsed["b"].value is None
    assert parsed["c"].value is None and parsed["c"].raw is None
    assert parsed["d"].value == "noise regularizes"


@pytest.mark.parametrize("data, message", [
    ({"a": "0.1x"}, '7b_ex1.json: a: "0.1x" is not a number'),
    ({"a": "0.1", "e": "1"}, "7b_ex1.json: e: unexpected key (allowed: a, b, c, d)"),
    ({"a": True}, "7b_ex1.json: a: true is not a number"),
    ({"a": [0.1]}, "7b_ex1.json: a: [0.1] is not a number"),
    ({"a": "-0.1"}, '7b_ex1.json: a: "-0.1" is not a positive number'),
    ({"a": 0}, "7b_ex1.json: a: 0 is not a positive number"),
    ({"a": "1e999"}, '7b_ex1.json: a: "1e999" is not a finite number'),
    ({"c": "128.5"}, '7b_ex1.json: c: "128.5" is not a whole number'),
    ({"c": "lots"}, '7b_ex1.json: c: "lots" is not a whole number'),
    ({"b": "maybe"}, '7b_ex1.json: b: "maybe" does not start with yes or no'),
    ({"b": "Yesterday it did"}, '7b_ex1.json: b: "Yesterday it did" does not start with yes or no'),
    ({"b": 1}, "7b_ex1.json: b: 1 does not start with yes or no"),
    ({"d": 42}, "7b_ex1.json: d: 42 is not text"),
    ({"d": {"text": "x"}}, '7b_ex1.json: d: {"text": "x"} is not text'),
])
def test_invalid_answers_give_one_exact_line(data, message):
    assert validate_answers(EX1, data) == [message]


def test_huge_whole_numbers_parse_or_are_refused_without_crashing():
    parsed = parse_answers(EX1, {"c": 1e20})["c"].value
    assert parsed == 10**20 and isinstance(parsed, int)
    assert validate_answers(EX1, {"c": 10**400}) == [f"7b_ex1.json: c: {str(10**400)[:39]}… is not a finite number"]


def test_every_error_is_reported_one_line_each_in_key_order():
    errors = validate_answers(EX2, {"z": 1, "a": "fast", "b": "big", "c": "perhaps", "d": 7, "y": 2})
    assert errors == [
        '7b_ex2.json: a: "fast" is not a number',
        '7b_ex2.json: b: "big" is not a whole number',
        '7b_ex2.json: c: "perhaps" does not start with yes or no',
        "7b_ex2.json: d: 7 is not text",
        "7b_ex2.json: y: unexpected key (allowed: a, b, c, d)",
        "7b_ex2.json: z: unexpected key (allowed: a, b, c, d)",
    ]
    assert all("\n" not in e for e in errors)


def test_long_values_are_clipped_to_keep_one_line():
    [error] = validate_answers(EX1, {"a": "x" * 500 + "\n" + "y"})
    assert len(error) < 100 and "\n" not in error and error.endswith("is not a number")


def test_parse_marks_invalid_keys_and_keeps_the_valid_ones():
    parsed = parse_answers(EX1, {"a": "0.1x", "c": "64"})
    assert parsed["a"].error == '7b_ex1.json: a: "0.1x" is not a number' and parsed["a"].value is None
    assert parsed["c"].value == 64 and parsed["c"].error is None


def _read_error(path, **kw) -> UserError:
    with pytest.raises(UserError) as info:
        read_answer_file(path, **kw)
    return info.value


def test_read_answer_file_reads_a_plain_file(tmp_path):
    p = tmp_path / EX1
    p.write_text(json.dumps({"a": "0.1"}), encoding="utf-8")
    assert read_answer_file(p) == {"a": "0.1"}


def test_read_answer_file_accepts_a_utf8_bom(tmp_path):
    p = tmp_path / EX1
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps({"d": "bruit"}).encode())
    assert read_answer_file(p) == {"d": "bruit"}


def test_a_symlink_is_rejected_without_being_followed(tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text('{"a": "0.1"}')
    link = tmp_path / EX1
    link.symlink_to(secret)
    e = _read_error(link)
    assert (str(e), e.exit_code) == ("7b_ex1.json: is a symbolic link, not a file", 1)


def test_a_fifo_is_rejected_without_blocking(tmp_path):
    fifo = tmp_path / EX1
    os.mkfifo(fifo)
    e = _read_error(fifo)
    assert (str(e), e.exit_code) == ("7b_ex1.json: is a FIFO, not a file", 1)


def test_a_huge_file_is_rejected(tmp_path):
    p = tmp_path / EX1
    p.write_text(json.dumps({"d": "x" * 70000}))
    e = _read_error(p)
    assert str(e).startswith("7b_ex1.json: is 70009 bytes, more than the 65536 allowed") and e.exit_code == 1


@pytest.mark.parametrize("raw, message", [
    (b'{"a": "0.1",}', "7b_ex1.json: is not valid JSON: Expecting property name enclosed in double quotes (line 1, column 13)"),
    (b"", "7b_ex1.json: is not valid JSON: Expecting value (line 1, column 1)"),
    (b'{"a": NaN}', "7b_ex1.json: is not valid JSON: NaN is not allowed in JSON"),
    (b'{"a": "\xff"}', "7b_ex1.json: is not UTF-8 text (bad byte at offset 7)"),
    (b'["0.1", "no"]', "7b_ex1.json: holds a list, not an object with the answer keys"),
    (b'"0.1"', "7b_ex1.json: holds a string, not an object with the answer keys"),
    (b'{"c": ' + b"9" * 5000 + b"}", "7b_ex1.json: holds a whole number of 5000 digits, too long to be an answer"),
])
def test_unusable_content_is_one_line(tmp_path, raw, message):
    p = tmp_path / EX1
    p.write_bytes(raw)
    e = _read_error(p)
    assert (str(e), e.exit_code) == (message, 1)


def test_a_missing_file_is_an_io_error(tmp_path):
    e = _read_error(tmp_path / EX1)
    assert (str(e), e.exit_code) == ("7b_ex1.json: no such file", 2)


def test_a_repeated_key_or_deep_nesting_is_named_not_merged(tmp_path):
    from grader.assessment.validate import parse_answer_bytes

    with pytest.raises(UserError, match=r"^7b_ex1.json: is not valid JSON: key 'a' appears twice$"):
        parse_answer_bytes("7b_ex1.json", b'{"a": 0.1, "a": "yes"}')
    with pytest.raises(UserError, match=r"nested too deeply$"):
        parse_answer_bytes("7b_ex1.json", b"[" * 100000 + b"]" * 100000)

"""The review's data: the decision log (fsync'd, torn and damaged lines), groups, version checks, overrides, publish."""

import csv
import io
import json

import pytest

from grader.assessment.overrides import load_overrides
from grader.common.errors import UserError
from grader.review.decisions import hold_lock, open_log
from grader.review.fabricate import graded_out
from grader.review.state import Invalid, NotFound, Stale, load_state, publish
from review_fixtures import GOOD as GOOD_D, answers, ex1d_class, small_class
from reference.spec import DEFAULT_SPEC


@pytest.fixture
def out(tmp_path):
    return small_class(tmp_path / "out", hostile=False)


def test_groups_identical_then_similar_largest_first(out):
    state = load_state(out)
    assert state.groups["ex1.d"][0] == ("ann", "bob", "cid", "dan")
    assert sorted(state.flagged("ex1.d")) == ["ann", "bob", "cid", "dan", "eve", "fay"]
    view = state.group_views("ex1.d")[0]
    assert view.score[:3] == [1.0, 1.0, 1.0] and 0.6 <= view.score[3] < 1 and not view.identical


def test_one_decision_covers_the_group_and_is_on_disk_before_it_returns(out):
    state = load_state(out)
    group = state.groups["ex1.d"][0]
    entry = state.decide("ex1.d", group[0], state.version("ex1.d", group), items=["steps", "noise"], points=None,
                         comment="good")
    lines = (out / "review" / "decisions.jsonl").read_text().splitlines()
    assert json.loads(lines[-1]) == entry and entry["students"] == list(group)
    rows = list(csv.DictReader(io.StringIO((out / "overrides.csv").read_text())))
    assert [(r["student"], r["question"], r["points"]) for r in rows] == [(s, "ex1.d", "2") for s in group]
    assert all(state.result(s)["questions"]["ex1.d"]["points"] == 2.0 for s in group)
    again = load_state(out)
    assert [again.decision("ex1.d", s)["seq"] for s in group] == [entry["seq"]] * 4


def test_a_stale_version_is_refused_with_the_current_value(out):
    state = load_state(out)
    group = state.groups["ex1.d"][0]
    old = state.version("ex1.d", group)
    state.decide("ex1.d", group[0], old, items=[], points=1.5, comment="first")
    with pytest.raises(Stale) as e:
        state.decide("ex1.d", group[0], old, items=[], points=0.0, comment="second")
    assert e.value.current["decision"]["points"] == 1.5 and e.value.current["decision"]["comment"] == "first"
    assert len(state.log.entries) == 1


def test_split_takes_a_member_out_and_its_own_decision_wins(out):
    state = load_state(out)
    group = state.groups["ex1.d"][0]
    state.decide("ex1.d", group[0], state.version("ex1.d", group), items=["steps"], points=None, comment="")
    state.split("ex1.d", "dan", state.version("ex1.d", group))
    assert ("dan",) in state.groups["ex1.d"] and state.groups["ex1.d"][0] == ("ann", "bob", "cid")
    state.decide("ex1.d", "dan", state.version("ex1.d", ("dan",)), items=[], points=0.5, comment="typos")
    again = load_state(out)
    assert again.groups["ex1.d"][0] == ("ann", "bob", "cid") and ("dan",) in again.groups["ex1.d"]
    assert again.result("dan")["questions"]["ex1.d"]["points"] == 0.5
    assert again.result("ann")["questions"]["ex1.d"]["points"] == 1.0
    assert again.group_views("ex1.d")[0].decision is not None


def test_bad_decisions_are_refused(out):
    state = load_state(out)
    key, version = state.groups["ex1.d"][0][0], state.version("ex1.d", state.groups["ex1.d"][0])
    for kwargs, message in [(dict(items=["nope"], points=None), "no rubric item"),
                            (dict(items=[], points=2.5), "between 0 and 2"),
                            (dict(items=[], points=None), "choose rubric items")]:
        with pytest.raises(Invalid, match=message):
            state.decide("ex1.d", key, version, comment="", **kwargs)
    with pytest.raises(Invalid, match="no reviewed question"):
        state.decide("ex1.a", key, version, items=[], points=1, comment="")


def test_a_yes_no_decision_sets_the_reason_and_keeps_the_automatic_point(out, tmp_path):
    state = load_state(out)
    fay = state.base["fay"]["questions"]["ex1.b"]
    auto = fay["parts"]["answer"]
    group = next(g for g in state.groups["ex1.b"] if "fay" in g)
    state.decide("ex1.b", group[0], state.version("ex1.b", group), items=["gap"], points=None, comment="")
    assert state.result("fay")["questions"]["ex1.b"]["points"] == auto + 0.5
    text = (out / "overrides.csv").read_text()
    assert text.splitlines()[0] == "student,question,points,comment,part" and ",reason" in text
    read = load_overrides(out / "overrides.csv", state.order, state.spec)
    assert {(o.student, o.part, o.points) for o in read} >= {("fay", "reason", 0.5)}


def test_changing_an_items_points_in_the_spec_rescores_decisions(out, tmp_path):
    state = load_state(out)
    group = state.groups["ex1.d"][0]
    state.decide("ex1.d", group[0], state.version("ex1.d", group), items=["steps"], points=None, comment="")
    spec = tmp_path / "spec.toml"
    spec.write_text(DEFAULT_SPEC.read_text().replace(
        '{ id = "steps", text = "bigger or more frequent weight updates per epoch", points = 1 }',
        '{ id = "steps", text = "bigger or more frequent weight updates per epoch", points = 1.5 }'))
    again = load_state(out, spec_path=spec)
    assert again.result("ann")["questions"]["ex1.d"]["points"] == 1.5


def test_torn_last_line_is_ignored_reported_and_cut(out):
    state = load_state(out)
    group = state.groups["ex1.d"][0]
    state.decide("ex1.d", group[0], state.version("ex1.d", group), items=["steps"], points=None, comment="")
    path = out / "review" / "decisions.jsonl"
    good = path.read_bytes()
    path.write_bytes(good + b'{"v":1,"seq":2,"time":"x","kind":"dec')
    notes = []
    again = load_state(out, say=notes.append)
    assert len(again.log.entries) == 1 and "torn last line" in notes[0] and "decisions.jsonl:2" in notes[0]
    assert path.read_bytes() == good
    g2 = again.groups["ex1.d"][1]
    again.decide("ex1.d", g2[0], again.version("ex1.d", g2), items=[], points=0, comment="")
    assert [json.loads(x)["seq"] for x in path.read_text().splitlines()] == [1, 2]


def test_a_damaged_middle_line_is_named_and_reset_moves_the_log_aside(out):
    path = out / "review" / "decisions.jsonl"
    state = load_state(out)
    for g in state.groups["ex1.d"][:2]:
        state.decide("ex1.d", g[0], state.version("ex1.d", g), items=[], points=1, comment="")
    lines = path.read_text().splitlines()
    path.write_text(lines[0][:-5] + "\n" + lines[1] + "\n")
    with pytest.raises(UserError) as e:
        load_state(out)
    assert "decisions.jsonl:1: damaged decision line" in str(e.value) and "--reset" in str(e.value)
    assert "\n" not in str(e.value) and e.value.exit_code == 2
    fresh = load_state(out, reset=True)
    assert fresh.log.entries == [] and not path.exists()
    assert len(list(path.parent.glob("decisions.jsonl.*.bak"))) == 1


def test_log_refuses_entries_it_would_not_read_back(tmp_path):
    log = open_log(tmp_path / "d.jsonl")
    with pytest.raises(ValueError):
        log.append({"kind": "decide", "question": "ex1.d", "students": [], "points": 1, "items": [], "comment": "", "part": ""})
    assert not (tmp_path / "d.jsonl").exists()


def test_publish_rebuilds_grades_results_feedback_and_summary(out):
    state = load_state(out)
    for q in state.questions:
        for g in list(state.groups[q.id]):
            state.decide(q.id, g[0], state.version(q.id, g), items=[], points=q.review_points, comment="ok")
    summary = publish(state)
    assert summary["waiting"] == 0 and summary["decisions"] == len(state.log.entries)
    rows = {r["student"]: r for r in csv.DictReader(io.StringIO((out / "grades.csv").read_text()))}
    assert rows["eve"]["review"] == "no" and rows["eve"]["ex1.d"] == "2"
    doc = json.loads((out / "results.json").read_text())
    assert doc["review"]["decisions"] == summary["decisions"] and "answer_files" not in doc["students"][0]
    assert "Instructor: 2 points" in (out / "feedback" / "eve.md").read_text()
    assert (out / "feedback" / "eve.html").is_file() and (out / "summary.html").is_file()


def test_the_ex1d_class_takes_as_many_decisions_as_groups(tmp_path):
    cls = ex1d_class()
    assert len(cls) >= 60
    out = graded_out(tmp_path / "out", {s: answers(t) for s, t in cls.items()})
    state = load_state(out)
    exact = len({" ".join(t.lower().split()) for t in cls.values()})
    groups = list(state.groups["ex1.d"])
    assert len(groups) < exact / 2, (len(groups), exact)
    for g in groups:
        state.decide("ex1.d", g[0], state.version("ex1.d", g), items=["steps"], points=None, comment="")
    assert len(state.log.entries) == len(groups)
    assert all(state.decision("ex1.d", s) is not None for s in cls)


def test_not_a_graded_folder_is_one_line(tmp_path):
    with pytest.raises(UserError, match="not a graded folder"):
        load_state(tmp_path)
    (tmp_path / "results.json").write_text("[1]")
    with pytest.raises(UserError, match="not the results.json"):
        load_state(tmp_path)


def test_an_optimum_the_notebook_never_trained_is_reviewed_like_any_flagged_answer(tmp_path):
    run = {"config": {"lr": 0.03, "batch_size": 128, "momentum": 0.9, "hidden": 512, "optimizer": "SGD"}, "epochs": 10,
           "source": "service", "served": "trained",
           "history": {"acc": [0.9] * 10, "test_acc": [0.8] * 10, "loss": [0.1] * 10, "test_loss": [0.2] * 10}}
    out = graded_out(tmp_path / "out", {"ann": answers("x"), "bob": answers("y")}, runs={"ann": [run], "bob": [run]})
    state = load_state(out)
    assert "ex1.a" in [q.id for q in state.questions] and "ex2.b" in [q.id for q in state.questions]
    assert state.flagged("ex1.a") == ["ann", "bob"]
    assert state.base["ann"]["questions"]["ex1.a"]["evidence_rule"] == "untried"
    (group,) = state.groups["ex1.a"]
    state.decide("ex1.a", group[0], state.version("ex1.a", group), items=[], points=1.5, comment="ran it by hand")
    assert state.result("bob")["questions"]["ex1.a"]["points"] == 1.5
    plain = load_state(small_class(tmp_path / "plain", hostile=False))
    assert [q.id for q in plain.questions] == ["ex1.b", "ex1.d", "ex2.c", "ex2.d"]


def test_students_whose_names_show_alike_stay_distinct_and_keep_their_store(tmp_path):
    """Two folder names that differ only in undecodable bytes both show as `dup\ufffd`: each keeps its own key,
    its stored answers (not the published results.json) and its decisions across a publish and a restart."""
    ff, fe = "dup\udcff", "dup\udcfe"  # the folder names b"dup\xff" and b"dup\xfe", as os.listdir gives them
    out = graded_out(tmp_path / "out", {ff: answers(GOOD_D), fe: answers("i dont know"), "ok": answers(GOOD_D)})
    state = load_state(out)
    doc = json.loads((out / "results.json").read_text())
    assert len(state.order) == 3 == len({s["file"] for s in doc["students"]})
    keys = {s["file"] for s in doc["students"] if s.get("student_hex")}
    assert keys <= set(state.order) and "ok" in state.order
    assert all(state.result(k)["student"] == "dup\ufffd" for k in keys)
    (alone,) = [g for g in state.groups["ex1.d"] if g[0] in keys and len(g) == 1]
    state.decide("ex1.d", alone[0], state.version("ex1.d", alone), items=[], points=0, comment="")
    publish(state)
    again = load_state(out)
    assert alone[0] in again.flagged("ex1.d") and again.decision("ex1.d", alone[0]) is not None
    assert sorted(len(g) for g in again.groups["ex1.d"]) == [1, 2]


def test_a_lone_surrogate_in_a_comment_is_stored_as_u_fffd(out):
    """The form path turns undecodable bytes into U+FFFD; a decision made from Python or JSON does the same,
    so the log line is always UTF-8."""
    state = load_state(out)
    group = state.groups["ex1.d"][0]
    entry = state.decide("ex1.d", group[0], state.version("ex1.d", group), items=[], points=1, comment="a\ud800b")
    assert entry["comment"] == "a\ufffdb"
    assert load_state(out).decision("ex1.d", group[0])["comment"] == "a\ufffdb"


def test_an_unknown_group_or_student_is_not_found_rather_than_stale(out):
    state = load_state(out)
    with pytest.raises(NotFound, match="no such group"):
        state.decide("ex1.d", "nobody", "0" * 16, items=[], points=1, comment="")
    with pytest.raises(NotFound, match="no such student"):
        state.split("ex1.d", "nobody", "0" * 16)
    assert state.log.entries == []


def test_only_one_process_holds_the_review_lock_and_a_kill_frees_it(tmp_path):
    """flock belongs to the open file: a second holder is refused at once, and a killed holder leaves no stale lock."""
    import subprocess
    import sys

    out = small_class(tmp_path / "out", hostile=False)
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; from grader.review.decisions import hold_lock; "
                              "held = hold_lock(sys.argv[1]); print('held', flush=True); time.sleep(60)", str(out)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(UserError) as e:
            hold_lock(out)
        assert "another `labgrader review`" in str(e.value) and f"pid {child.pid}" in str(e.value)
        assert "\n" not in str(e.value) and e.value.exit_code == 2
    finally:
        child.kill()
        child.wait()
    hold_lock(out).close()

"""Evidence under `labgrader grade`, in the real sandbox with the training service: a class whose students
follow their own complete runs, answer a value they never ran, run nothing, train with Adam, or forge the
kit's runs file. The reference is built for the test: its ex1.a tie set is {0.001}, a learning rate no
10-epoch run on this data picks, so a student who follows its own complete lr sweep is outside it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from grader_fixtures import grade_json as grade
from nb_fixtures import notebook, printed
from grader_fixtures import make_artifact

pytestmark = pytest.mark.sandbox

FAST = ["--cell-timeout", "240", "--timeout", "400"]
LRS = [0.001, 0.003, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0]
SETUP = '''import json, os, torch
from src.fmnist_utils import build_mlp, train as kit_train
CALLS = 0
def train(**kw):
    global CALLS
    CALLS += 1
    return kit_train(**kw)
(x_train, y_train), (x_test, y_test) = fmnist_utils.get_data()
def run(lr, S=128, momentum=0.9, adam=False, epochs=10):
    torch.manual_seed(0)
    model = build_mlp(784, 10, hidden_dim=512)
    o = optim.Adam(model.parameters(), lr=lr) if adam else optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    return train(loss=torch.nn.CrossEntropyLoss(), model=model, x_train=x_train, y_train=y_train, x_test=x_test,
                 y_test=y_test, optim=o, batch_size=S, n_epochs=epochs)
def answer(a, c):
    json.dump({"a": str(a), "b": "yes, the small rates underfit", "c": c, "d": ""}, open("7b_ex1.json", "w"))'''
OWN = f'''H = {{lr: run(lr) for lr in {LRS!r}}}
best = max(H, key=lambda lr: H[lr]["acc"][-1] if H[lr]["acc"][-1] == H[lr]["acc"][-1] else -1)
answer(best, 128)
print("CALLS", CALLS)
print("BEST", best)'''
UNTRIED = '''run(0.01)
answer(0.1, 128)
print("CALLS", CALLS)'''
NOTHING = '''answer(0.1, 256)
print("CALLS", CALLS)'''
ADAM = '''run(0.01, adam=True, epochs=2)
run(0.01, adam=True, epochs=2)
answer(0.01, 128)
print("CALLS", CALLS)'''
FORGED = '''H = run(0.01)
fake = {"acc": [0.99] * 10, "test_acc": [0.99] * 10, "loss": [0.01] * 10, "test_loss": [0.01] * 10}
with open(os.environ["LABGRADER_RUNS_FILE"], "a") as f:
    for lr in (0.01, 0.1):
        f.write(json.dumps({"config": {"lr": lr, "batch_size": 128, "momentum": 0.9, "hidden": 512, "optimizer": "SGD"},
                            "epochs": 10, "source": "service", "served": "trained", "history": fake}) + "\\n")
    f.write("{not json\\n")
answer(0.1, 128)
print("CALLS", CALLS)
print("ACC", json.dumps(H["acc"]))'''


@pytest.fixture(scope="module")
def graded(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("evidence")
    subs = root / "class"
    for name, cell in (("own", OWN), ("untried", UNTRIED), ("nothing", NOTHING), ("adam", ADAM), ("forger", FORGED)):
        notebook(subs / name, SETUP, cell)
    artifact = make_artifact()
    artifact["questions"]["ex1.a"]["tie_set"] = [0.001]
    ref = root / "reference.json"
    ref.write_text(json.dumps(artifact))
    out = root / "out"
    code, _ = grade(str(subs), "--out", str(out), "-j", "2", "--data-dir", str(tiny_data), "--reference", str(ref),
                    "--train-cache", str(root / "memo"), *FAST)
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    return out, {s["student"]: s for s in results["students"]}, results


def calls(student: dict, source: str) -> int:
    return sum(r["calls"] for r in student["runs"] if r["source"] == source)


def test_results_validate_and_every_student_is_graded(graded):
    _, students, results = graded
    schema = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "results.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(results)
    assert {s: students[s]["status"] for s in students} == dict.fromkeys(("adam", "forger", "nothing", "own", "untried"),
                                                                         "graded")


def test_own_complete_runs_outside_the_tie_set_earn_half_the_points_with_the_reason(graded):
    out, students, _ = graded
    own = students["own"]
    best = float(printed(out, "own", "BEST ")[0])
    assert int(printed(out, "own", "CALLS ")[0]) == len(LRS) == calls(own, "service") + calls(own, "notebook-reported")
    lr_runs = [r for r in own["runs"] if r["config"]["batch_size"] == 128]
    assert sorted(r["config"]["lr"] for r in lr_runs) == LRS
    assert all(r["source"] == "service" for r in lr_runs)
    q = own["questions"]["ex1.a"]
    ev = q["evidence"]
    assert ev["complete"] and ev["agrees"] and ev["tried"] == LRS and ev["own_best"] == best != 0.001
    assert ev["own_metric"][f"{best:g}"] == max(v for v in ev["own_metric"].values() if v is not None)
    assert (q["points"], q["verdict"], q["evidence_rule"]) == (1.0, "partly", "own-runs")
    assert f"Your own runs over the whole grid pointed to {best:g}" in q["feedback"]
    assert "the reference finds only {0.001} best" in q["feedback"]
    c = own["questions"]["ex1.c"]
    assert c["evidence"]["tried"] == [128] and c["evidence"]["agrees"] and not c["evidence"]["complete"]
    assert c["points"] == 0 and c["evidence_rule"] is None


def test_an_answer_the_notebook_never_trained_is_flagged_for_review(graded):
    _, students, _ = graded
    q = students["untried"]["questions"]["ex1.a"]
    assert q["evidence"]["tried"] == [0.01] and q["evidence"]["answer_tried"] is False
    assert q["evidence_rule"] == "untried" and q["review"] and q["points"] == 0.0
    assert "Your notebook never trained learning rate 0.1" in q["feedback"]
    assert students["untried"]["review"]


def test_a_student_who_ran_nothing_has_an_empty_record_and_every_answer_is_flagged(graded):
    out, students, _ = graded
    s = students["nothing"]
    assert s["runs"] == [] and s["runs_summary"]["evidence"] == "service" and printed(out, "nothing", "CALLS ") == ["0"]
    for qid in ("ex1.a", "ex1.c"):
        q = s["questions"][qid]
        assert q["evidence"]["tried"] == [] and q["evidence"]["own_best"] is None
        assert q["evidence_rule"] == "untried" and q["review"]


def test_runs_trained_in_the_notebook_are_reported_and_never_evidence(graded):
    out, students, _ = graded
    s = students["adam"]
    assert int(printed(out, "adam", "CALLS ")[0]) == 2 == calls(s, "notebook-reported")
    (run,) = s["runs"]
    assert run["source"] == "notebook-reported" and run["served"] == "notebook" and run["calls"] == 2
    assert run["config"]["optimizer"] == "Adam" and run["epochs"] == 2 and len(run["history"]["acc"]) == 2
    assert "the optimizer is not a plain torch.optim.SGD" in run["note"]
    assert s["runs_summary"]["notebook_reported"] == 1 and "not evidence" in s["runs_summary"]["note"]
    q = s["questions"]["ex1.a"]
    assert q["evidence"]["tried"] == [] and q["evidence_rule"] == "untried"


def test_a_forged_runs_file_cannot_change_a_service_run(graded):
    out, students, _ = graded
    s = students["forger"]
    real_acc = json.loads(printed(out, "forger", "ACC ")[0])
    service = [r for r in s["runs"] if r["source"] == "service"]
    assert len(service) == 1 and service[0]["config"]["lr"] == 0.01 and service[0]["history"]["acc"] == real_acc
    forged = [r for r in s["runs"] if r["source"] == "notebook-reported"]
    assert sorted(r["config"]["lr"] for r in forged) == [0.01, 0.1]
    assert all(r["served"] == "notebook" and r["history"]["acc"] == [0.99] * 10 for r in forged)
    assert calls(s, "service") == int(printed(out, "forger", "CALLS ")[0]) == 1
    note = s["runs_summary"]["note"]
    assert "1 line(s) of the notebook's runs file could not be read" in note and "2 run(s) reported by the notebook" in note
    q = s["questions"]["ex1.a"]
    assert q["evidence"]["own_metric"] == {"0.01": real_acc[-1]} and q["evidence"]["answer_tried"] is False
    assert q["evidence_rule"] == "untried"


def test_the_terminal_summary_counts_the_evidence_rules(graded):
    from grader.reports.report import summary_table

    _, students, _ = graded
    text = summary_table(list(students.values()))
    rules = [q["evidence_rule"] for s in students.values() for q in s["questions"].values()]
    untried, own = rules.count("untried"), rules.count("own-runs")
    assert untried >= 5 and own >= 1
    assert (f"evidence: 5 student(s) with a runs record from the training service; {own} answer(s) earned part of their "
            f"points by following the student's own complete runs, {untried} answer(s) for values the notebook never "
            "trained await review") in text

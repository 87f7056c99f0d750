"""The training service under `labgrader grade`, in the real sandbox: the same grades with and without it,
and a notebook that attacks the socket fails in its own cell while the others are served."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import nbformat
import pytest

from grader_fixtures import grade_json as grade
from nb_fixtures import notebook, printed

pytestmark = pytest.mark.sandbox

FAST = ["--cell-timeout", "120", "--timeout", "300"]
SETUP = ("import json, torch\n"
         "from src.fmnist_utils import build_mlp, train\n"
         "(x_train, y_train), (x_test, y_test) = fmnist_utils.get_data()")
RUNS = '''histories = {}
for lr, S in [(0.1, 128), (0.03, 128), (0.1, 256)]:
    model = build_mlp(784, 10, hidden_dim=512)
    loss = torch.nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    H = train(loss=loss, model=model, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
              optim=optimizer, batch_size=S, n_epochs=2)
    histories[f"{lr}/{S}"] = H
with torch.no_grad():
    after = {"test_acc": float((model(x_test).argmax(1) == y_test).float().mean()), "rand": torch.rand(3).tolist()}
print("RESULTS " + json.dumps({"histories": histories, "after": after}))'''
ANSWERS = '''best_lr = max([0.1, 0.03], key=lambda lr: histories[f"{lr}/128"]["acc"][-1])
best_S = max([128, 256], key=lambda S: histories[f"0.1/{S}"]["acc"][-1])
json.dump({"a": str(best_lr), "b": "yes, it underfits", "c": best_S, "d": ""}, open("7b_ex1.json", "w"))'''
CUSTOM = RUNS.replace("model = build_mlp(784, 10, hidden_dim=512)",
                      "model = torch.nn.Sequential(torch.nn.Linear(784, 64), torch.nn.Tanh(), torch.nn.Linear(64, 10))")


@pytest.fixture(scope="module")
def class_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("class")
    notebook(root / "s1", SETUP, RUNS, ANSWERS)
    notebook(root / "s2", SETUP, "# the same runs, another student\n" + RUNS, ANSWERS)
    notebook(root / "custom", SETUP, CUSTOM, ANSWERS)
    notebook(root / "crash", SETUP, RUNS, "histories['missing']", ANSWERS)
    return root


def rules_off(folder: Path) -> Path:
    """The bundled spec with both evidence rules switched off: with and without the service, the same points."""
    from reference.spec import DEFAULT_SPEC

    text = DEFAULT_SPEC.read_text().replace("own_runs_fraction = 0.5", "own_runs_fraction = 0").replace(
        "flag_untried = true", "flag_untried = false")
    assert "own_runs_fraction = 0\n" in text and "flag_untried = false" in text
    (folder / "spec.toml").write_text(text)
    return folder / "spec.toml"


@pytest.fixture(scope="module")
def both(class_dir, synthetic_data, tmp_path_factory):
    base = tmp_path_factory.mktemp("graded")
    spec = rules_off(base)
    runs = {}
    for name, flags in (("with", ["--train-cache", str(base / "memo")]), ("without", ["--no-train-service"])):
        out = base / name
        code, summary = grade(str(class_dir), "--out", str(out), "-j", "2", "--data-dir", str(synthetic_data),
                              "--spec", str(spec), *FAST, *flags)
        assert code == 0
        runs[name] = (out, summary, json.loads((out / "results.json").read_text()))
    return runs


def without_evidence(student: dict) -> dict:
    questions = {qid: {k: v for k, v in q.items() if k not in ("evidence", "evidence_rule")}
                 for qid, q in student["questions"].items()}
    return {**{k: v for k, v in student.items() if k not in ("duration_s", "timing", "runs", "runs_summary")},
            "questions": questions}


def test_grades_with_and_without_the_service_are_the_same(both):
    """With the evidence rules off; the runs record differs by design (the service's runs are recorded)."""
    (_, _, with_), (_, _, without) = both["with"], both["without"]
    a = {s["student"]: without_evidence(s) for s in with_["students"]}
    b = {s["student"]: without_evidence(s) for s in without["students"]}
    assert a == b
    assert all(s["runs_summary"]["evidence"] == "service" for s in with_["students"])
    assert all(s["runs_summary"]["evidence"] is None for s in without["students"])
    assert {s: a[s]["status"] for s in a} == {"s1": "graded", "s2": "graded", "custom": "graded", "crash": "error"}


def test_histories_and_the_state_after_training_agree_within_1e_4(both):
    (out_with, _, _), (out_without, _, _) = both["with"], both["without"]
    for student in ("s1", "s2", "custom", "crash"):
        (got,), (want,) = printed(out_with, student, "RESULTS "), printed(out_without, student, "RESULTS ")
        got, want = json.loads(got), json.loads(want)
        assert got["histories"].keys() == want["histories"].keys()
        for run, h in got["histories"].items():
            for metric, values in h.items():
                assert max(abs(x - y) for x, y in zip(values, want["histories"][run][metric], strict=True)) < 1e-4
        assert abs(got["after"]["test_acc"] - want["after"]["test_acc"]) < 1e-4
        assert got["after"]["rand"] == want["after"]["rand"]


def test_the_service_trained_each_distinct_run_once_and_only_the_lab_calls(both):
    _, summary, results = both["with"]
    service = results["train_service"]
    assert service["trained"] == 3 and service["from_memo"] + service["joined"] == 6
    assert service["data"] == "synthetic" and service["device"] == "cpu" and service["refused"] == 0
    assert "train_service" not in both["without"][2]
    schema = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "results.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(results)


HOSTILE = '''import os, socket, struct, json
import torch
from reference import wire
from reference.kit_remote import exchange
path = os.environ["LABGRADER_TRAIN_SOCKET"]
def raw(data):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.connect(path)
        c.sendall(data)
        return wire.read_frame(wire.socket_reader(c), max_payload=0)[0]
print("REPLY " + json.dumps(raw(b"\\x00" * 64)))
print("REPLY " + json.dumps(raw(wire.MAGIC + struct.pack(">I", 1 << 30))))
print("MEMO " + json.dumps(os.path.exists({memo!r})))'''
MALFORMED = '''header = {"op": "train", "version": 1, "data": "0" * 40, "lr": -1.0, "momentum": 0.9, "batch_size": 128, "epochs": 2}
tensors = {"w1": torch.zeros(8, 784), "b1": torch.zeros(8), "w2": torch.zeros(10, 8), "b2": torch.zeros(10),
           "rng": torch.get_rng_state()}
exchange(header, tensors, hidden=8, input_dim=784)'''


def test_a_notebook_attacking_the_socket_fails_in_its_own_cell_and_the_others_are_served(
        class_dir, synthetic_data, tmp_path):
    subs = tmp_path / "class"
    memo = tmp_path / "memo"
    notebook(subs / "attacker", HOSTILE.replace("{memo!r}", repr(str(memo))), MALFORMED)
    for student in ("s1", "s2"):
        notebook(subs / student, SETUP, RUNS, ANSWERS)
    code, summary = grade(str(subs), "--out", str(tmp_path / "out"), "-j", "3", "--data-dir", str(synthetic_data),
                          "--train-cache", str(memo), *FAST)
    assert code == 0
    got = {s["student"]: s for s in summary["students"]}
    assert got["attacker"]["status"] == "error"
    reason = got["attacker"]["reason"]
    assert reason.startswith('cell 2 «header = {"op": "train", "version": 1, …»: TrainingServiceError: '
                             "the training service refused this request: malformed request: lr must be a finite number from 0")
    replies = [json.loads(r) for r in printed(tmp_path / "out", "attacker", "REPLY ")]
    assert "protocol marker" in replies[0]["error"] and "1073741824 bytes, over the limit" in replies[1]["error"]
    assert printed(tmp_path / "out", "attacker", "MEMO ") == ["false"]
    assert got["s1"]["status"] == got["s2"]["status"] == "graded"
    service = json.loads((tmp_path / "out" / "results.json").read_text())["train_service"]
    assert service["refused"] == 3 and service["trained"] == 3
    assert len(list(memo.glob("*/*.lgts"))) == 3


LONG_RUN = '''model = build_mlp(784, 10, hidden_dim=512)
optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
H = train(loss=torch.nn.CrossEntropyLoss(), model=model, x_train=x_train, y_train=y_train, x_test=x_test,
          y_test=y_test, optim=optimizer, batch_size=128, n_epochs=2000)'''
SHORT_RUN = '''import time
time.sleep(4)  # the attacker's run is in the service first
model = build_mlp(784, 10, hidden_dim=512)
optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
H = train(loss=torch.nn.CrossEntropyLoss(), model=model, x_train=x_train, y_train=y_train, x_test=x_test,
          y_test=y_test, optim=optimizer, batch_size=128, n_epochs=1)
json.dump({"a": "0.03", "b": "yes, it underfits", "c": 256, "d": ""}, open("7b_ex1.json", "w"))'''


def test_the_victim_is_graded_while_the_attackers_long_run_is_in_the_service(synthetic_data, tmp_path):
    """One notebook's single 2,000-epoch train() call (within its quota) cannot make another's 1-epoch call
    wait: the victim is graded in its own time (that the attacker's run then stops at its next epoch boundary is
    tests/test_train_service.py's starvation case: here grading may end first)."""
    subs = tmp_path / "class"
    notebook(subs / "attacker", SETUP, LONG_RUN)
    notebook(subs / "victim", SETUP, SHORT_RUN)
    out = tmp_path / "out"
    code, summary = grade(str(subs), "--out", str(out), "-j", "2", "--data-dir", str(synthetic_data),
                          "--train-cache", str(tmp_path / "memo"), "--timeout", "90", "--cell-timeout", "90")
    assert code == 0
    got = {s["student"]: s for s in summary["students"]}
    assert got["victim"]["status"] == "graded", got["victim"]["reason"]
    assert got["attacker"]["status"] == "timeout" and "cell 2" in got["attacker"]["reason"]
    results = json.loads((out / "results.json").read_text())
    took = {s["student"]: s["duration_s"] for s in results["students"]}
    assert took["victim"] < took["attacker"]
    nb = nbformat.read(out / "executed" / "victim.ipynb", as_version=4)
    err = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stderr")
    assert "1 epoch(s) trained by labgrader's training service" in err
    service = results["train_service"]
    print(f"victim graded in {took['victim']:.1f} s, attacker stopped after {took['attacker']:.1f} s; service: {service}")
    assert service["trained"] == 1

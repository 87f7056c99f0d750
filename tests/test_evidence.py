"""The runs record and the evidence rules, without a kernel: merging, trust, own optima, own yes/no truths,
and the spec's switches."""

from __future__ import annotations

import dataclasses
import json

import pytest

from grader.assessment.evidence import counted_runs, optimum_evidence, yesno_evidence
from grader.assessment.runs import parse_reported, runs_record
from grader.assessment.score import score_answers
from grader.assessment.validate import parse_answers
from grader_fixtures import reference_object
from reference.spec import load_spec

LRS = [0.001, 0.003, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0]


def history(final_acc: float, best_test: float, epochs: int = 10) -> dict:
    acc = [final_acc * (e + 1) / epochs for e in range(epochs)]
    test = [best_test * (e + 1) / epochs for e in range(epochs)]
    return {"acc": acc, "test_acc": test, "loss": [1.0] * epochs, "test_loss": [1.0] * epochs}


def service_run(lr, batch_size=128, momentum=0.9, acc=0.8, test=0.7, epochs=10, served="trained", hidden=512):
    return {"config": {"lr": lr, "batch_size": batch_size, "momentum": momentum, "hidden": hidden, "optimizer": "SGD"},
            "epochs": epochs, "source": "service", "served": served,
            "history": None if served in ("diverged", "failed") else history(acc, test, epochs)}


def line(**entry) -> str:
    return json.dumps(entry) + "\n"


@pytest.fixture(scope="module")
def spec():
    return load_spec()


def test_repeats_merge_with_averaged_histories_and_counted_calls():
    runs, summary = runs_record([service_run(0.1, acc=0.8), service_run(0.1, acc=0.6, served="memo"),
                                 service_run(0.03)], None)
    assert [r["config"]["lr"] for r in runs] == [0.1, 0.03]
    assert runs[0]["calls"] == 2 and runs[0]["served"] == "trained"
    assert runs[0]["history"]["acc"][-1] == pytest.approx(0.7)
    assert summary == {"service": 2, "notebook_reported": 0, "calls": 3, "evidence": "service", "note": None}


def test_a_reported_line_claiming_the_service_stays_notebook_reported_and_bad_lines_are_counted():
    forged = line(config={"lr": 0.1, "batch_size": 128, "momentum": 0.9, "hidden": 512, "optimizer": "SGD"}, epochs=10,
                  source="service", served="trained", history=history(0.99, 0.99), note="\x1b[31mred\nsecond")
    text = forged + "{broken\n" + line(config=[], history={}) + line(config={}, history={"acc": "x"}) + '{"cut'
    runs, summary = runs_record([service_run(0.1, acc=0.5)], text)
    assert [(r["source"], r["served"]) for r in runs] == [("service", "trained"), ("notebook-reported", "notebook")]
    assert runs[0]["history"]["acc"][-1] == 0.5
    assert runs[1]["note"] == "\x1b[31mred second"
    assert summary["evidence"] == "service"
    assert summary["note"].startswith("4 line(s) of the notebook's runs file could not be read; 1 run(s) reported")


def test_a_diverged_service_run_stands_for_the_notebooks_local_retraining():
    reported = line(config={"lr": 1.0, "batch_size": 128, "momentum": 0.9, "hidden": 512, "optimizer": "SGD"},
                    epochs=10, history={"acc": [0.1] * 10, "test_acc": [0.1] * 10, "loss": [None] * 10,
                                        "test_loss": [None] * 10}, note="the run diverged in epoch 2")
    runs, summary = runs_record([service_run(1.0, served="diverged")], reported)
    assert len(runs) == 1 and runs[0]["served"] == "diverged" and runs[0]["history"] is None
    assert summary["calls"] == 1 and summary["evidence"] == "service"


def test_no_service_or_a_failed_service_means_no_evidence_rule():
    assert runs_record(None, None) == (None, {"service": 0, "notebook_reported": 0, "calls": 0, "evidence": None,
                                              "note": "no runs were recorded: no training service served this notebook"})
    _, summary = runs_record([service_run(0.1, served="failed")], None)
    assert summary["evidence"] is None and "failed during this notebook" in summary["note"]
    entry = line(config={"lr": 0.1, "batch_size": 128, "momentum": 0.9, "hidden": 512, "optimizer": "SGD"},
                 epochs=10, history=history(0.9, 0.8))
    runs, summary = runs_record(None, entry)
    assert runs[0]["source"] == "notebook-reported" and summary["evidence"] is None


def test_parse_reported_caps_entries_and_cleans_values():
    entry = line(config={"lr": "0.1", "batch_size": 12.5, "momentum": True, "hidden": 64, "optimizer": 7}, epochs=2,
                 history={"acc": [0.5, float("nan")]})
    (run,), bad = parse_reported(entry.replace("NaN", "NaN"))
    assert bad == 0
    assert run["config"] == {"lr": None, "batch_size": None, "momentum": None, "hidden": 64, "optimizer": None}
    assert run["history"]["acc"] == [0.5, None] and run["history"]["loss"] == []
    many, bad = parse_reported(entry * 1005)
    assert len(many) == 1000 and bad == 5


def test_only_full_epoch_sgd_runs_of_the_counted_source_on_the_sweep_count(spec):
    runs = [service_run(0.1), service_run(0.03, epochs=2), service_run(0.3, hidden=64), service_run(0.2, momentum=0.5),
            {**service_run(0.01), "source": "notebook-reported"}]
    counted = counted_runs(spec, runs, "service")
    assert [(c.lr, c.batch_size, c.momentum) for c in counted] == [(0.1, 128, 0.9)]
    assert counted_runs(spec, runs, None) is None and counted_runs(spec, None, "service") is None


def test_runs_from_crafted_weights_are_shown_but_never_evidence(spec):
    """Sabotaged starting weights make every other grid value diverge, so a wrong answer would look best."""
    q = spec.question("ex1.a")
    crafted = [{**service_run(lr, served="diverged"), "init": "custom"} for lr in LRS if lr != 0.001]
    runs, summary = runs_record(crafted + [{**service_run(0.001, acc=0.5), "init": "default"}], None)
    counted = counted_runs(spec, runs, "service")
    ev = optimum_evidence(q, spec, counted, "service", LRS.index(0.001))
    assert ev["tried"] == [0.001] and not ev["complete"]
    assert "8 run(s) started from weights that are not PyTorch's default initialisation" in summary["note"]
    assert len(runs) == 9 and all(r["init"] == "custom" for r in runs[:8])


def test_optimum_evidence_own_best_agreement_coverage(spec):
    q = spec.question("ex1.a")
    accs = dict(zip(LRS, [0.5, 0.6, 0.7, 0.8, 0.85, 0.84, 0.7, 0.3, 0.1]))
    runs = [service_run(lr, acc=a) for lr, a in accs.items()] + [service_run(1.0, served="diverged")]
    counted = counted_runs(spec, runs[:8] + runs[9:], "service")
    ev = optimum_evidence(q, spec, counted, "service", LRS.index(0.1))
    assert ev["tried"] == LRS and ev["complete"] and ev["own_best"] == 0.1 and ev["agrees"] and ev["answer_tried"]
    assert ev["own_metric"]["1"] is None and ev["own_metric"]["0.1"] == pytest.approx(0.85)
    ev = optimum_evidence(q, spec, counted, "service", LRS.index(0.2))
    assert ev["agrees"] is False and ev["answer_tried"]
    partial = counted_runs(spec, runs[2:4], "service")
    ev = optimum_evidence(q, spec, partial, "service", LRS.index(0.3))
    assert ev["tried"] == [0.01, 0.03] and not ev["complete"] and ev["own_best"] == 0.03
    assert ev["answer_tried"] is False and ev["agrees"] is False
    ev = optimum_evidence(q, spec, {}, "service", None)
    assert ev["tried"] == [] and ev["own_best"] is None and ev["agrees"] is None and ev["answer_tried"] is None


def test_yes_no_truths_from_own_runs(spec):
    ex1b, ex2c = spec.question("ex1.b"), spec.question("ex2.c")
    same = [service_run(lr, acc=a, test=a) for lr, a in ((0.01, 0.7), (0.1, 0.9), (0.3, 0.8))]
    counted = counted_runs(spec, same, "service")
    assert yesno_evidence(ex1b, spec, counted, "service", True)["own_truth"] is True
    apart = [service_run(0.01, acc=0.7, test=0.9), service_run(0.1, acc=0.9, test=0.6)]
    ev = yesno_evidence(ex1b, spec, counted_runs(spec, apart, "service"), "service", True)
    assert ev["own_truth"] is False and ev["agrees"] is False
    one = yesno_evidence(ex1b, spec, counted_runs(spec, apart[:1], "service"), "service", True)
    assert one["own_truth"] is None and one["agrees"] is None
    noisy_better = [service_run(0.01, test=0.6), service_run(0.1, test=0.7), service_run(0.1, batch_size=32, test=0.8)]
    ev = yesno_evidence(ex2c, spec, counted_runs(spec, noisy_better, "service"), "service", False)
    assert ev["own_truth"] is True and ev["agrees"] is False and ev["sweeps"] == ["lr", "batch"]
    assert ev["by_sweep"]["batch"]["tried"] == [32, 128]


def answers(a: str, b: str = "yes, it underfits at the small rates", c: str = "32") -> dict:
    return {"7b_ex1.json": parse_answers("7b_ex1.json", {"a": a, "b": b, "c": c, "d": ""}), "7b_ex2.json": None}


def full_lr_sweep(best: float) -> list[dict]:
    return [service_run(lr, acc=0.9 if lr == best else 0.5 + lr / 10, test=0.5) for lr in LRS]


def test_own_complete_runs_outside_the_tie_set_earn_the_spec_fraction(spec):
    ref = reference_object()
    scored = score_answers(spec, ref, answers("0.01"), runs=full_lr_sweep(0.01), evidence_source="service")
    q = scored["questions"]["ex1.a"]
    assert (q["points"], q["verdict"], q["evidence_rule"]) == (1.0, "partly", "own-runs")
    assert "Your own runs over the whole grid pointed to 0.01, as your answer does; over 3 seeds the reference finds" \
           " {0.1, 0.2} best" in q["feedback"]
    hidden = score_answers(spec, ref, answers("0.01"), hide=True, runs=full_lr_sweep(0.01), evidence_source="service")
    assert "0.1" not in hidden["questions"]["ex1.a"]["feedback"].split("Your answer is wrong")[1]
    off = dataclasses.replace(spec, own_runs_fraction=0.0)
    q = score_answers(off, ref, answers("0.01"), runs=full_lr_sweep(0.01), evidence_source="service")["questions"]["ex1.a"]
    assert (q["points"], q["verdict"], q["evidence_rule"]) == (0.0, "wrong", None)
    partial = full_lr_sweep(0.01)[:-1]
    q = score_answers(spec, ref, answers("0.01"), runs=partial, evidence_source="service")["questions"]["ex1.a"]
    assert q["points"] == 0.0 and q["evidence"]["complete"] is False


def test_an_answer_never_trained_is_flagged_unless_the_spec_says_not(spec):
    ref = reference_object()
    runs = [service_run(0.01)]
    q = score_answers(spec, ref, answers("0.1"), runs=runs, evidence_source="service")["questions"]["ex1.a"]
    assert q["review"] and q["evidence_rule"] == "untried" and q["points"] == 2.0
    assert "Your notebook never trained learning rate 0.1 with the sweep's fixed values for 10 epochs" in q["feedback"]
    off = dataclasses.replace(spec, flag_untried=False)
    q = score_answers(off, ref, answers("0.1"), runs=runs, evidence_source="service")["questions"]["ex1.a"]
    assert not q["review"] and q["evidence_rule"] is None
    q = score_answers(spec, ref, answers("0.1"), runs=runs, evidence_source=None)["questions"]["ex1.a"]
    assert q["evidence"] is None and q["evidence_rule"] is None and not q["review"]


def test_a_yes_no_answer_that_follows_own_complete_runs_earns_part_of_its_answer_point(spec):
    ref = reference_object()
    runs = [service_run(lr, acc=a, test=a) for lr, a in zip(LRS, [0.1, 0.2, 0.3, 0.4, 0.9, 0.5, 0.4, 0.3, 0.2])]
    q = score_answers(spec, ref, answers("0.1", b="yes, it underfits at the small rates"), runs=runs,
                      evidence_source="service")["questions"]["ex1.b"]
    assert q["evidence"]["own_truth"] is True and q["evidence"]["agrees"] and q["evidence"]["complete"]
    assert q["parts"]["answer"] == 0.5 and q["evidence_rule"] == "own-runs"
    assert "Your own complete runs say 'yes', as you did: 0.5 of 1 point for following them." in q["feedback"]


def test_the_spec_checks_its_evidence_table(tmp_path):
    from grader.common.errors import UserError
    from reference.spec import DEFAULT_SPEC

    base = DEFAULT_SPEC.read_text()
    for bad, said in (("own_runs_fraction = 1.5", "evidence.own_runs_fraction"), ('flag_untried = "yes"', "evidence.flag_untried"),
                      ("extra = 1", "evidence")):
        path = tmp_path / "spec.toml"
        key = bad.split(" =")[0]
        text = base.replace("own_runs_fraction = 0.5", bad) if key != "flag_untried" else base.replace("flag_untried = true", bad)
        if key == "extra":
            text = base.replace("flag_untried = true", "flag_untried = true\n" + bad)
        path.write_text(text)
        with pytest.raises(UserError, match=said):
            load_spec(path)


def test_the_runs_file_is_read_without_following_links_blocking_or_reading_past_the_cap(tmp_path):
    import os

    from grader.execution import execute, sandbox

    state = tmp_path / sandbox.STATE
    state.mkdir()
    runs = state / sandbox.RUNS_FILE
    secret = tmp_path / "secret"
    secret.write_text("not for the notebook\n")
    os.symlink(secret, runs)
    assert execute._read_state_file(tmp_path, sandbox.RUNS_FILE, 100, cut=True) is None
    runs.unlink()
    os.mkfifo(runs)
    assert execute._read_state_file(tmp_path, sandbox.RUNS_FILE, 100, cut=True) is None
    runs.unlink()
    runs.write_text("x" * 250)
    assert execute._read_state_file(tmp_path, sandbox.RUNS_FILE, 100, cut=True) == b"x" * 100
    assert execute._read_state_file(tmp_path, sandbox.RUNS_FILE, 100) is None
    assert parse_reported("x" * 100) == ([], 1)

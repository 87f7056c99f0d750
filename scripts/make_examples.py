"""Build the example submissions in submissions/ from the lab notebook and a reference artifact.

Each example is the lab notebook as a student would hand it in: the original cells, the student's
training, and answers chosen to land on one grading outcome and one evidence case (what the
student's own runs, as the training service recorded them, say about each answer). Run again after
the demo reference or the spec changes:

    .venv/bin/python scripts/make_examples.py --reference reference/demo/lab7b-synthetic.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell

from grader.execution.labnotebook import export_cells, load_lab_notebook
from reference.spec import load_spec

SHORT_TRAINING = '''# Loop through different LR and BS and find optimal ones (one epoch each, to save time).
results = {}
for lr in [0.01, 0.1]:
    model = build_mlp(784, 10, hidden_dim=512)
    loss = torch.nn.CrossEntropyLoss(size_average=True)
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    H = train(loss=loss, model=model, x_train=x_train, y_train=y_train,
              x_test=x_test, y_test=y_test,
              optim=optimizer, batch_size=128, n_epochs=1)
    results[lr] = H
    print(lr, H["acc"][-1], max(H["test_acc"]))'''

CHOSEN_TRAINING = '''# Train the values I answer, and a neighbour to compare with, for the full {epochs} epochs;
# each run starts from the same seed, so they compare fairly.
results = {{}}
for lr, batch_size in {configs!r}:
    torch.manual_seed(0)
    model = build_mlp(784, 10, hidden_dim={hidden})
    loss = torch.nn.CrossEntropyLoss(size_average=True)
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum={momentum!r})
    H = train(loss=loss, model=model, x_train=x_train, y_train=y_train,
              x_test=x_test, y_test=y_test,
              optim=optimizer, batch_size=batch_size, n_epochs={epochs})
    results[lr, batch_size] = H
    print(lr, batch_size, H["acc"][-1], max(H["test_acc"]))'''

ADAM_TRAINING = '''# Adam adapts the step size per weight, so the learning rate should matter less (one epoch each, to save time).
results = {}
for lr in [0.001, 0.01]:
    model = build_mlp(784, 10, hidden_dim=512)
    loss = torch.nn.CrossEntropyLoss(size_average=True)
    optimizer = optim.Adam(model.parameters(), lr=lr)
    H = train(loss=loss, model=model, x_train=x_train, y_train=y_train,
              x_test=x_test, y_test=y_test,
              optim=optimizer, batch_size=128, n_epochs=1)
    results[lr] = H
    print(lr, H["acc"][-1], max(H["test_acc"]))'''

SWEEP_TRAINING = '''# The whole learning-rate sweep (batch size {batch_size}, momentum {momentum}, {epochs} epochs), each run from the same seed.
lrs = {lrs!r}
results = {{}}
for lr in lrs:
    torch.manual_seed(0)
    model = build_mlp(784, 10, hidden_dim={hidden})
    loss = torch.nn.CrossEntropyLoss(size_average=True)
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum={momentum!r})
    H = train(loss=loss, model=model, x_train=x_train, y_train=y_train,
              x_test=x_test, y_test=y_test,
              optim=optimizer, batch_size={batch_size}, n_epochs={epochs})
    results[lr] = H
    print(lr, H["acc"][-1], max(H["test_acc"]))'''

SWEEP_ANSWERS = '''# My answers, read off my own runs.
best_train = max(lrs, key=lambda lr: results[lr]["acc"][-1])
best_test = max(lrs, key=lambda lr: max(results[lr]["test_acc"]))
same = best_test == best_train
answers = {{
    "a": f"{{best_train:g}}",
    "b": (f"yes, {{best_test:g}} gave both the best final training accuracy and the best test accuracy: "
          "at 10 epochs the model is not overfitting yet, so the better fit also generalizes better.") if same else
         (f"no, the best training accuracy came at {{best_train:g}} but the best test accuracy at {{best_test:g}}: "
          "the better fit overfits a little, the train/test gap grows."),
    "c": "{batch_size}",
    "d": {why_faster!r},
}}
print(answers)
json.dump(answers, open("7b_ex1.json", "w"))'''

SWEEP_ANSWERS_2 = '''# Noise is lr / batch size; does more of it rank with better test accuracy in my runs?
noise_rank = np.argsort(np.argsort([lr / {batch_size} for lr in lrs]))
test_rank = np.argsort(np.argsort([max(results[lr]["test_acc"]) for lr in lrs]))
rho = float(np.corrcoef(noise_rank, test_rank)[0, 1])
answers = {{
    "a": f"{{best_test:g}}",
    "b": "{batch_size}",
    "c": (f"yes, rank correlation {{rho:.2f}}: more noise acted as a regularizer and generalized better.") if rho > 0 else
         (f"no, rank correlation {{rho:.2f}}: beyond {{best_test:g}} the noise made the optimization unstable, "
          "so it hurt more than the regularization helped."),
    "d": {like_dropout!r},
}}
print(answers)
json.dump(answers, open("7b_ex2.json", "w"))'''

REASON_YES = ("yes, the model is not overfitting after 10 epochs: train and test accuracy rise together, "
              "so it is still underfitting and the best training accuracy also generalizes best.")
REASON_NO = ("no, the model starts to overfit at that learning rate: the gap between train and test "
             "accuracy grows, so the best training fit does not generalize best.")
WHY_FASTER = ("A higher learning rate takes bigger steps, and a smaller batch gives more updates per epoch; "
              "the gradient noise also helps escape flat regions and saddle points, so the loss minimum is reached sooner.")
NOISE_YES = "yes, more noise acted as a regularizer and the flatter minimum generalized better, less overfitting."
NOISE_NO = "no, beyond a point the noise made the optimization unstable, so it hurt more than the regularization helped."
LIKE_DROPOUT = ("SGD noise perturbs the updates randomly, much like dropout perturbs activations and batch "
                "normalization adds batch-dependent noise: all are stochastic regularizers that reduce overfitting.")


def _dump(name: str, answers: dict) -> str:
    return f"answers = {json.dumps(answers, indent=4)}\njson.dump(answers, open({name!r}, \"w\"))"


def _num(x: float) -> str:
    return f"{x:g}"


def right_answers(ref: dict) -> tuple[dict, dict]:
    q = ref["questions"]
    yes = lambda qid, y, n: y if q[qid]["truth"] else n
    ex1 = {"a": _num(q["ex1.a"]["best"]), "b": yes("ex1.b", REASON_YES, REASON_NO),
           "c": _num(q["ex1.c"]["best"]), "d": WHY_FASTER}
    ex2 = {"a": _num(q["ex2.a"]["best"]), "b": _num(q["ex2.b"]["best"]),
           "c": yes("ex2.c", NOISE_YES, NOISE_NO), "d": LIKE_DROPOUT}
    return ex1, ex2


def wrong_answers(ref: dict) -> tuple[dict, dict]:
    """Far from every tie set, the opposite yes/no, and two answers that fail the schema."""
    q = ref["questions"]
    far = lambda qid: _num(max(q[qid]["grid"], key=lambda v: min(abs(q[qid]["grid"].index(v) - q[qid]["grid"].index(t)) for t in q[qid]["tie_set"])))
    ex1 = {"a": far("ex1.a"), "b": "no" if q["ex1.b"]["truth"] else "yes", "c": "big", "d": "dunno"}
    ex2 = {"a": far("ex2.a"), "b": far("ex2.b"), "c": "maybe", "d": ""}
    return ex1, ex2


def chosen_configs(spec, ref: dict) -> list[tuple[float, int]]:
    """(lr, batch size) of each right optimum in its sweep, plus the point both sweeps share (the lr sweep's
    batch size at the batch sweep's lr) as the neighbour each is compared with; grid order, no repeats."""
    q = ref["questions"]
    lr_sweep, batch_sweep = spec.sweeps["lr"], spec.sweeps["batch"]
    shared = (batch_sweep.fixed["lr"], lr_sweep.fixed["batch_size"])
    wanted = {(q[qid]["best"], lr_sweep.fixed["batch_size"]) for qid in ("ex1.a", "ex2.a")}
    wanted |= {(batch_sweep.fixed["lr"], q[qid]["best"]) for qid in ("ex1.c", "ex2.b")} | {shared}
    return sorted(wanted, key=lambda c: (c[1] != lr_sweep.fixed["batch_size"], c))


def chosen_training(spec, ref: dict) -> str:
    momentum = spec.sweeps["lr"].fixed["momentum"]
    assert spec.sweeps["batch"].fixed["momentum"] == momentum
    return CHOSEN_TRAINING.format(configs=[(float(lr), int(s)) for lr, s in chosen_configs(spec, ref)],
                                  epochs=spec.epochs, hidden=spec.hidden_dim, momentum=momentum)


def sweep_cells(spec) -> tuple[str, str, str]:
    """The lr sweep's training, then cells that answer from its results (the batch questions with the
    only batch size it ran)."""
    sweep = spec.sweeps["lr"]
    fill = {"lrs": [float(v) for v in sweep.values], "batch_size": int(sweep.fixed["batch_size"]),
            "momentum": sweep.fixed["momentum"], "epochs": spec.epochs, "hidden": spec.hidden_dim,
            "why_faster": WHY_FASTER, "like_dropout": LIKE_DROPOUT}
    return SWEEP_TRAINING.format(**fill), SWEEP_ANSWERS.format(**fill), SWEEP_ANSWERS_2.format(**fill)


def build(seed: list, metadata: dict, training: str, cells_after_training: list) -> nbformat.NotebookNode:
    """seed: the export's cells of the packaged lab notebook (intro, setup, Exercise 1, ...)."""
    nb = nbformat.v4.new_notebook(metadata=metadata)
    intro, setup, ex1_md = seed[:3]
    nb.cells = [intro, setup, ex1_md, new_code_cell(training), *cells_after_training]
    return nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="reference/demo/lab7b-synthetic.json")
    parser.add_argument("--out", default="submissions")
    parser.add_argument("--sweep", action="store_true",
                        help="also write eve_sweep, the whole lr sweep for the full epochs (not in submissions/: it "
                             "would make the README's grade command take minutes longer)")
    args = parser.parse_args()
    ref = json.loads(Path(args.reference).read_text())
    spec = load_spec()
    lab = load_lab_notebook()
    seed = export_cells(lab)
    metadata = {k: v for k, v in lab.metadata.items() if k != "labgrader"}
    ex2_md = seed[5]
    r1, r2 = right_answers(ref)
    w1, w2 = wrong_answers(ref)
    chosen = chosen_training(spec, ref)
    sweep, sweep_ex1, sweep_ex2 = sweep_cells(spec)
    examples = {
        "ada_right": (chosen, [new_code_cell(_dump("7b_ex1.json", r1)), ex2_md, new_code_cell(_dump("7b_ex2.json", r2))]),
        "ben_wrong": (chosen, [new_code_cell(_dump("7b_ex1.json", w1)), ex2_md, new_code_cell(_dump("7b_ex2.json", w2))]),
        "cho_crash": (ADAM_TRAINING, [
            new_code_cell(_dump("7b_ex1.json", r1)), ex2_md,
            new_code_cell("best_lr = max(results, key=lambda lr: max(results[lr]['test_acc']))\n"
                          "print('best lr for test accuracy:', best_lr, results[best_lr]['test_acc_max'])"),
            new_code_cell(_dump("7b_ex2.json", r2))]),
        "dev_silent": (SHORT_TRAINING, [new_markdown_cell("I will write my answers later."),
                                        new_code_cell("answers = {\"a\": \"\", \"b\": \"\", \"c\": \"\", \"d\": \"\"}")]),
    }
    if args.sweep:
        examples["eve_sweep"] = (sweep, [new_code_cell(sweep_ex1), ex2_md, new_code_cell(sweep_ex2)])
    for student, (training, cells) in examples.items():
        folder = Path(args.out) / student
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(build(seed, metadata, training, cells), folder / "lab7b.ipynb")
        print(f"wrote {folder / 'lab7b.ipynb'}")


if __name__ == "__main__":
    main()

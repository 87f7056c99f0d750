"""Build the example submissions in submissions/ from the lab notebook and a reference artifact.

Each example is the lab notebook as a student would hand it in: the original cells, a short
training run, and answers chosen to land on one grading outcome. Run again after the demo
reference changes:

    .venv/bin/python scripts/make_examples.py --reference reference/demo/lab7b-synthetic.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell

from grader.execution.labnotebook import export_cells, load_lab_notebook

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


def build(seed: list, metadata: dict, cells_after_training: list) -> nbformat.NotebookNode:
    """seed: the export's cells of the packaged lab notebook (intro, setup, Exercise 1, ...)."""
    nb = nbformat.v4.new_notebook(metadata=metadata)
    intro, setup, ex1_md = seed[:3]
    nb.cells = [intro, setup, ex1_md, new_code_cell(SHORT_TRAINING), *cells_after_training]
    return nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="reference/demo/lab7b-synthetic.json")
    parser.add_argument("--out", default="submissions")
    args = parser.parse_args()
    ref = json.loads(Path(args.reference).read_text())
    lab = load_lab_notebook()
    seed = export_cells(lab)
    metadata = {k: v for k, v in lab.metadata.items() if k != "labgrader"}
    ex2_md = seed[5]
    r1, r2 = right_answers(ref)
    w1, w2 = wrong_answers(ref)
    examples = {
        "ada_right": [new_code_cell(_dump("7b_ex1.json", r1)), ex2_md, new_code_cell(_dump("7b_ex2.json", r2))],
        "ben_wrong": [new_code_cell(_dump("7b_ex1.json", w1)), ex2_md, new_code_cell(_dump("7b_ex2.json", w2))],
        "cho_crash": [new_code_cell(_dump("7b_ex1.json", r1)), ex2_md,
                      new_code_cell("best_lr = max(results, key=lambda lr: max(results[lr]['test_acc']))\n"
                                    "print('best lr for test accuracy:', best_lr, results[best_lr]['test_acc_max'])"),
                      new_code_cell(_dump("7b_ex2.json", r2))],
        "dev_silent": [new_markdown_cell("I will write my answers later."),
                       new_code_cell("answers = {\"a\": \"\", \"b\": \"\", \"c\": \"\", \"d\": \"\"}")],
    }
    for student, cells in examples.items():
        folder = Path(args.out) / student
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(build(seed, metadata, cells), folder / "lab7b.ipynb")
        print(f"wrote {folder / 'lab7b.ipynb'}")


if __name__ == "__main__":
    main()

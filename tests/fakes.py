"""Small hand-made reference artifacts, results and executed notebooks for report tests.

Each configuration runs once (shared grid points take the levels of the first sweep naming them),
as in a real artifact. The fake sweep is designed so every expected value is distinctive text (no tie-set member
also appears in a prompt or as a point count): lr tie set for final training accuracy
{0.3, 0.5}, for best test accuracy {0.2}; batch-size tie set for final training accuracy
{32, 64}, for best test accuracy {256}. lr = 1.0 diverges at epoch 3 in every seed.
"""

from __future__ import annotations

import base64
import io
import math
import statistics
from html.parser import HTMLParser

from reference.spec import load_spec

EPOCHS = 10
SEEDS = (0, 1, 2)
SEED_OFFSETS = (-0.001, 0.0, 0.001)
CHANCE = 0.1

TRAIN_LEVEL = {
    "lr": {0.001: 0.70, 0.003: 0.78, 0.01: 0.84, 0.03: 0.88, 0.1: 0.91, 0.2: 0.925, 0.3: 0.944, 0.5: 0.945, 1.0: None},
    "batch": {16: 0.94, 32: 0.955, 64: 0.954, 128: 0.93, 256: 0.91, 512: 0.87, 1024: 0.82},
    "momentum": {0.0: 0.80, 0.5: 0.83, 0.9: 0.86, 0.95: 0.87, 0.99: 0.85},
}
TEST_LEVEL = {
    "lr": {0.001: 0.69, 0.003: 0.76, 0.01: 0.82, 0.03: 0.85, 0.1: 0.87, 0.2: 0.895, 0.3: 0.88, 0.5: 0.875, 1.0: None},
    "batch": {16: 0.86, 32: 0.87, 64: 0.875, 128: 0.88, 256: 0.89, 512: 0.87, 1024: 0.84},
    "momentum": {0.0: 0.79, 0.5: 0.81, 0.9: 0.84, 0.95: 0.845, 0.99: 0.83},
}
EXPLANATION = {
    "ex1.b": "Reference: the test-optimal learning rate 0.2 lies outside the train tie set.",
    "ex2.c": "Reference: Spearman rho between lr/S and best test accuracy is positive over the sweeps.",
}


def spec():
    return load_spec()


def _history(train: float | None, test: float | None, off: float) -> dict:
    if train is None:
        acc = [0.5, 0.6] + [CHANCE] * (EPOCHS - 2)
        return {"acc": acc, "test_acc": [0.55, 0.62] + [CHANCE] * (EPOCHS - 2),
                "loss": [1.2, 1.0] + [None] * (EPOCHS - 2), "test_loss": [1.1, 0.95] + [None] * (EPOCHS - 2)}
    r = 0.6
    acc = [(train + off) * (1 - r ** (e + 1)) / (1 - r ** EPOCHS) for e in range(EPOCHS)]
    peak = 6
    test_acc = [(test + off) * (1 - 0.002 * (e - peak) ** 2) for e in range(EPOCHS)]
    return {"acc": acc, "test_acc": test_acc,
            "loss": [2.3 * (1 - a) for a in acc], "test_loss": [2.3 * (1 - a) for a in test_acc]}


def _metric(history: dict, metric: str) -> float:
    return {"final_train_acc": history["acc"][-1], "best_train_acc": max(history["acc"]),
            "best_test_acc": max(history["test_acc"]), "final_test_acc": history["test_acc"][-1]}[metric]


def _row(value, values: list[float], diverged: int) -> dict:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return {"value": value, "mean": mean, "se": se, "n": len(values), "n_diverged": diverged, "per_seed": values}


def _tie_set(table: list[dict], z: float) -> tuple[float, list[float]]:
    best = max(table, key=lambda r: r["mean"])
    ties = [r["value"] for r in table
            if best["mean"] - r["mean"] <= z * math.sqrt(best["se"] ** 2 + r["se"] ** 2)]
    return best["value"], ties


def fake_reference(sp=None) -> dict:
    """A reference artifact (plain dict, the DESIGN.md shape) consistent with the spec's sweeps."""
    sp = sp or spec()
    runs, tables, sweeps, done = [], {}, {}, {}
    for name, sweep in sp.sweeps.items():
        sweeps[name] = {"vary": sweep.vary, "values": list(sweep.values), "fixed": dict(sweep.fixed)}
        tables[name] = {}
        per_value = {}
        for config, value in zip(sweep.configs(), sweep.values):
            if config not in done:
                done[config] = []
                for seed, off in zip(SEEDS, SEED_OFFSETS):
                    h = _history(TRAIN_LEVEL[name][value], TEST_LEVEL[name][value], off)
                    diverged = TRAIN_LEVEL[name][value] is None
                    runs.append({"config": config.as_dict(), "seed": seed, "diverged": diverged,
                                 "diverged_epoch": 2 if diverged else None, "history": h})
                    done[config].append((h, diverged))
            per_value[value] = done[config]
        for metric in ("final_train_acc", "best_test_acc", "final_test_acc", "best_train_acc"):
            tables[name][metric] = [_row(v, [_metric(h, metric) for h, _ in hs], sum(d for _, d in hs))
                                    for v, hs in per_value.items()]
    questions = {}
    for q in sp.questions:
        if q.kind == "optimum":
            table = tables[q.sweep][q.metric]
            best, ties = _tie_set(table, sp.z)
            questions[q.id] = {"kind": "optimum", "sweep": q.sweep, "vary": sp.sweeps[q.sweep].vary,
                               "metric": q.metric, "z": sp.z, "grid": list(sp.sweeps[q.sweep].values),
                               "table": table, "best": best, "tie_set": ties,
                               "explanation": f"Reference for {q.id}: the tie set is the best value and its ties."}
        elif q.kind == "yesno":
            questions[q.id] = {"kind": "yesno", "truth": q.id != "ex1.b", "explanation": EXPLANATION.get(q.id, ""),
                               "details": {}}
        else:
            questions[q.id] = {"kind": "text"}
    return {
        "format": "labgrader-reference/1", "assignment": sp.assignment_id, "spec_sha256": sp.sha256,
        "provenance": {"device": "cpu", "device_name": "fake", "torch_version": "none", "dtype": "float32",
                       "data": {"kind": "synthetic", "dir": "/nowhere", "n_train": 600, "n_test": 100, "sha256": {}},
                       "seeds": list(SEEDS), "epochs": EPOCHS, "wall_time_s": 0.0, "created": "2024-01-01T00:00:00Z",
                       "labgrader_version": "0.1.0", "command": "fake"},
        "sweeps": sweeps, "runs": runs, "tables": tables, "questions": questions,
    }


def _blank(answer) -> bool:
    return answer is None or (isinstance(answer, str) and not answer.strip())


def _score(q, answer, ref_q: dict, sp) -> dict:
    """A deliberately simple scorer: enough for report tests, not the grader's scoring rules."""
    entry = {"points": 0.0, "max": q.points, "verdict": "missing", "answer": answer, "expected": None,
             "feedback": "Not answered.", "review": False}
    if q.kind == "optimum":
        entry["expected"] = list(ref_q["tie_set"])
    elif q.kind == "yesno":
        entry["expected"] = ref_q["truth"]
    if _blank(answer):
        return entry
    if q.kind == "optimum":
        grid, ties = ref_q["grid"], ref_q["tie_set"]
        try:
            value = float(answer)
        except ValueError:
            entry.update(verdict="wrong", feedback="Not a number.")
            return entry
        index = min(range(len(grid)), key=lambda i: abs(math.log(value) - math.log(grid[i])) if value > 0 else i)
        steps = min(abs(index - grid.index(t)) for t in ties)
        fraction = 1.0 if steps == 0 else sp.near_fraction if steps == 1 else 0.0
        entry.update(points=q.points * fraction,
                     verdict="right" if steps == 0 else "partly" if steps == 1 else "wrong",
                     feedback=f"Expected a value in the tie set {ties}; best {ref_q['best']}.")
    elif q.kind == "yesno":
        said_yes = answer is True or (isinstance(answer, str) and answer.strip().lower().startswith("yes"))
        right = said_yes == ref_q["truth"]
        entry.update(points=q.answer_points if right else 0.0, verdict="review", review=True,
                     feedback=f"Expected '{'yes' if ref_q['truth'] else 'no'}'. {ref_q['explanation']}")
    else:
        long_enough = len(str(answer)) >= q.rubric.min_length
        entry.update(points=q.points if long_enough else q.points / 2, verdict="review", review=True,
                     feedback="Provisional: rubric keywords " + ", ".join(q.rubric.keywords))
    return entry


def fake_result(student: str, answers: dict, *, sp=None, ref=None, status: str = "graded", reason: str = "",
                executed: str | None = None) -> dict:
    """A per-student result in the DESIGN.md shape; answers maps question id -> raw answer."""
    sp = sp or spec()
    ref = ref or fake_reference(sp)
    if status != "graded":
        return {"student": student, "status": status, "reason": reason, "total": 0.0, "max": sp.max_points,
                "questions": {}, "review": False, "content_sha256": "0" * 64, "executed": executed,
                "duration_s": 1.0}
    questions = {q.id: _score(q, answers.get(q.id), ref["questions"][q.id], sp) for q in sp.questions}
    return {"student": student, "status": status, "reason": reason,
            "total": sum(e["points"] for e in questions.values()), "max": sp.max_points,
            "questions": questions, "review": any(e["review"] for e in questions.values()),
            "content_sha256": "0" * 64, "executed": executed, "duration_s": 1.0}


GOOD_ANSWERS = {
    "ex1.a": "0.5", "ex1.b": "No, the test optimum is a smaller rate: the larger one overfits the training set.",
    "ex1.c": 32, "ex1.d": "A larger step or more updates per epoch moves the weights further per iteration, "
                          "and gradient noise helps escape saddle points.",
    "ex2.a": 0.2, "ex2.b": "256", "ex2.c": "Yes, noise acts as a regularizer and finds flatter minima.",
    "ex2.d": "Both inject random perturbations during training, a stochastic regularization that reduces overfitting.",
}
WRONG_ANSWERS = {
    "ex1.a": "0.01", "ex1.b": "yes it was the same", "ex1.c": "1024", "ex1.d": "", "ex2.a": "0.003",
    "ex2.b": 1024, "ex2.c": "no", "ex2.d": "no idea",
}

ESC = "\x1b"
IPYTHON_TRACEBACK = [
    f"{ESC}[0;31m---------------------------------------------------------------------------{ESC}[0m",
    f"{ESC}[0;31mRuntimeError{ESC}[0m                              Traceback (most recent call last)",
    f"Cell {ESC}[0;32mIn[3], line 2{ESC}[0m\n{ESC}[1;32m      1{ESC}[0m model {ESC}[38;5;241m={ESC}[39m build_mlp(784, 10)\n"
    f"{ESC}[0;32m----> 2{ESC}[0m H {ESC}[38;5;241m={ESC}[39m {ESC}[43mtrain_student{ESC}[49m(model)\n",
    f"Cell {ESC}[0;32mIn[2], line 4{ESC}[0m, in {ESC}[0;36mtrain_student{ESC}[0;34m(model){ESC}[0m\n"
    f"{ESC}[1;32m      3{ESC}[0m     x {ESC}[38;5;241m={ESC}[39m torch.zeros(5, 783)\n"
    f"{ESC}[0;32m----> 4{ESC}[0m     {ESC}[38;5;28;01mreturn{ESC}[39;00m model(x)\n",
    f"File {ESC}[0;32m/opt/venv/lib/python3.11/site-packages/torch/nn/modules/module.py:1736{ESC}[0m, in "
    f"{ESC}[0;36mModule._wrapped_call_impl{ESC}[0;34m(self, *args, **kwargs){ESC}[0m\n"
    f"{ESC}[1;32m   1735{ESC}[0m     {ESC}[38;5;28;01mreturn{ESC}[39;00m {ESC}[38;5;28mself{ESC}[39m{ESC}[38;5;241m.{ESC}[39m_call_impl(*args)\n",
    f"File {ESC}[0;32m/opt/venv/lib/python3.11/site-packages/torch/nn/modules/linear.py:125{ESC}[0m, in "
    f"{ESC}[0;36mLinear.forward{ESC}[0;34m(self, input){ESC}[0m\n"
    f"{ESC}[0;32m--> 125{ESC}[0m     {ESC}[38;5;28;01mreturn{ESC}[39;00m F{ESC}[38;5;241m.{ESC}[39mlinear(input, self.weight, self.bias)\n",
    f"File {ESC}[0;32m/opt/venv/lib/python3.11/site-packages/IPython/core/interactiveshell.py:3577{ESC}[0m, in "
    f"{ESC}[0;36mInteractiveShell.run_code{ESC}[0;34m(self, code_obj){ESC}[0m\n     exec(code_obj, self.user_global_ns)\n",
    f"{ESC}[0;31mRuntimeError{ESC}[0m: mat1 and mat2 shapes cannot be multiplied (5x783 and 784x512)",
]


def error_notebook():
    """An executed notebook (nbformat) whose third cell raised, with IPython's coloured traceback."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("from src import fmnist_utils\nfrom src.fmnist_utils import *", execution_count=1),
        nbformat.v4.new_code_cell("def train_student(model):\n    import torch\n    x = torch.zeros(5, 783)\n"
                                  "    return model(x)", execution_count=2),
        nbformat.v4.new_code_cell("model = build_mlp(784, 10)\nH = train_student(model)", execution_count=3),
        nbformat.v4.new_code_cell("print('never reached')"),
    ]
    nb.cells[2].outputs = [nbformat.v4.new_output(
        "error", ename="RuntimeError", evalue="mat1 and mat2 shapes cannot be multiplied (5x783 and 784x512)",
        traceback=IPYTHON_TRACEBACK)]
    return nb


# reading the reports back -----------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    """A report parsed by the stdlib HTML parser: tags, images and visible text, each with the
    data-qid of the innermost element around it; mismatched end tags are recorded as problems."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict]] = []
        self.starts: list[tuple[str, dict]] = []
        self.images: list[tuple[str, str | None]] = []
        self.texts: list[tuple[str, str | None]] = []
        self.problems: list[str] = []
        self.keyed: dict[str, list[str]] = {}
        self.feed(text)
        self.close()
        if self.stack:
            self.problems.append(f"unclosed: {[t for t, _ in self.stack]}")

    def _qid(self) -> str | None:
        return next((a["data-qid"] for _, a in reversed(self.stack) if a.get("data-qid")), None)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.starts.append((tag, a))
        if tag == "img":
            self.images.append((a.get("src", ""), self._qid()))
        if tag not in VOID_TAGS:
            self.stack.append((tag, a))
        if "data-key" in a:
            self.keyed.setdefault(a["data-key"], [])

    def handle_endtag(self, tag):
        if tag in VOID_TAGS:
            return
        if not self.stack or self.stack[-1][0] != tag:
            self.problems.append(f"unexpected </{tag}>")
            return
        self.stack.pop()

    def handle_data(self, data):
        if not any(t in ("style", "title") for t, _ in self.stack):
            self.texts.append((data, self._qid()))
        key = next((a["data-key"] for _, a in reversed(self.stack) if "data-key" in a), None)
        if key is not None:
            self.keyed[key].append(data)

    @property
    def text(self) -> str:
        """Visible text, whitespace collapsed."""
        return " ".join(" ".join(t for t, _ in self.texts).split())

    def text_of(self, qid: str) -> str:
        return " ".join(" ".join(t for t, q in self.texts if q == qid).split())

    def qids(self) -> list[str]:
        return [a["data-qid"] for tag, a in self.starts if tag == "section" and a.get("data-qid")]

    def cells(self) -> dict[str, str]:
        """data-key -> the text of the element carrying it (the summary's number cells)."""
        return {k: "".join(v).strip() for k, v in self.keyed.items()}


def decode_png(uri: str):
    """The image behind a data URI, decoded by matplotlib; fails loudly when it is not a PNG."""
    import matplotlib.image as mpimg

    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix), uri[:40]
    raw = base64.b64decode(uri[len(prefix):], validate=True)
    assert raw[:8] == PNG_SIGNATURE
    return mpimg.imread(io.BytesIO(raw), format="png")

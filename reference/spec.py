"""The assignment spec: one TOML file holds every number the solver and the grader use."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from grader.common.errors import UserError

DEFAULT_SPEC = Path(__file__).with_name("specs") / "lab7b.toml"

HYPERPARAMETERS = ("lr", "batch_size", "momentum")
WHOLE_HYPERPARAMETERS = ("batch_size",)
QUESTION_KINDS = ("optimum", "yesno", "text")
METRICS = ("final_train_acc", "best_test_acc", "final_test_acc", "best_train_acc")
TRUTHS = ("test_optimum_in_train_tie_set", "noise_rank_correlation_positive")


@dataclass(frozen=True)
class Config:
    """One point of the hyperparameter grid; hashable so shared points run once."""

    lr: float
    batch_size: int
    momentum: float

    def key(self) -> str:
        return f"lr={self.lr:g},bs={self.batch_size},mom={self.momentum:g}"

    def as_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "batch_size": self.batch_size, "momentum": self.momentum}


@dataclass(frozen=True)
class Sweep:
    name: str
    vary: str
    values: tuple
    fixed: dict

    def configs(self) -> list[Config]:
        out = []
        for v in self.values:
            params = dict(self.fixed)
            params[self.vary] = v
            out.append(Config(float(params["lr"]), int(params["batch_size"]), float(params["momentum"])))
        return out


@dataclass(frozen=True)
class Rubric:
    keywords: tuple[str, ...]
    min_keywords: int
    min_length: int


@dataclass(frozen=True)
class RubricItem:
    """One thing a reviewer can tick for an answer; its points count toward the reviewed part."""

    id: str
    text: str
    points: float


@dataclass(frozen=True)
class Question:
    id: str
    file: str
    key: str
    kind: str
    points: float
    prompt: str
    sweep: str | None = None
    sweeps: tuple[str, ...] = ()
    metric: str | None = None
    truth: str | None = None
    answer_points: float = 0.0
    rubric: Rubric | None = None
    items: tuple[RubricItem, ...] = ()

    @property
    def review_points(self) -> float:
        """The points review decides: a yes/no question's reason, a free-text question's whole."""
        return self.points - self.answer_points if self.kind == "yesno" else self.points

    def item(self, item_id: str) -> RubricItem | None:
        return next((i for i in self.items if i.id == item_id), None)


@dataclass(frozen=True)
class Spec:
    path: Path
    sha256: str
    assignment_id: str
    title: str
    answer_files: tuple[str, ...]
    preamble: tuple[str, ...]
    input_dim: int
    hidden_dim: int
    output_dim: int
    epochs: int
    seeds: tuple[int, ...]
    dtype: str
    sweeps: dict[str, Sweep]
    z: float
    near_fraction: float
    snap: str
    questions: tuple[Question, ...] = field(default=())
    group_threshold: float = 0.6
    copy_threshold: float = 0.9
    own_runs_fraction: float = 0.5
    flag_untried: bool = True

    def configs(self) -> list[Config]:
        """Every grid point of every sweep, each once, in sweep order."""
        seen: dict[Config, None] = {}
        for sweep in self.sweeps.values():
            for c in sweep.configs():
                seen.setdefault(c, None)
        return list(seen)

    def question(self, qid: str) -> Question:
        for q in self.questions:
            if q.id == qid:
                return q
        raise UserError(f"{self.path.name}: no question {qid!r}")

    def questions_in(self, filename: str) -> list[Question]:
        return [q for q in self.questions if q.file == filename]

    @property
    def max_points(self) -> float:
        return float(sum(q.points for q in self.questions))


def _need(table: dict, key: str, kind, where: str):
    if key not in table:
        raise UserError(f"spec: {where}: missing key {key!r}")
    value = table[key]
    ok = isinstance(value, kind) and not (kind in (int, (int, float)) and isinstance(value, bool))
    if not ok:
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise UserError(f"spec: {where}.{key}: expected {names}, got {value!r}")
    return value


def _only(table: dict, allowed: set[str], where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise UserError(f"spec: {where}: unknown key {extra[0]!r}")


def _positive(value, where: str):
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise UserError(f"spec: {where}: must be a positive number, got {value!r}")
    return value


def _sweep(name: str, t: dict) -> Sweep:
    where = f"sweeps.{name}"
    _only(t, {"vary", "values", "fixed"}, where)
    vary = _need(t, "vary", str, where)
    if vary not in HYPERPARAMETERS:
        raise UserError(f"spec: {where}.vary: {vary!r} is not one of {', '.join(HYPERPARAMETERS)}")
    values = _need(t, "values", list, where)
    if not values:
        raise UserError(f"spec: {where}.values: empty")
    fixed = _need(t, "fixed", dict, where)
    missing = [h for h in HYPERPARAMETERS if h != vary and h not in fixed]
    if missing or vary in fixed or set(fixed) - set(HYPERPARAMETERS):
        raise UserError(f"spec: {where}.fixed: must set exactly the two hyperparameters other than {vary!r}")
    for h, v in list(fixed.items()) + [(vary, v) for v in values]:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UserError(f"spec: {where}: {h} value {v!r} is not a number")
        if h == "batch_size" and (not float(v).is_integer() or v < 1):
            raise UserError(f"spec: {where}: batch_size {v!r} is not a positive integer")
        if h == "lr" and v <= 0:
            raise UserError(f"spec: {where}: lr {v!r} must be positive")
        if h == "momentum" and not 0 <= v < 1:
            raise UserError(f"spec: {where}: momentum {v!r} must be in [0, 1)")
    if len(set(values)) != len(values) or list(values) != sorted(values):
        raise UserError(f"spec: {where}.values: must be increasing without repeats")
    return Sweep(name, vary, tuple(values), dict(fixed))


def _question(i: int, t: dict, sweeps: dict[str, Sweep], files: tuple[str, ...]) -> Question:
    where = f"questions[{i}]"
    _only(t, {"id", "file", "key", "kind", "points", "prompt", "sweep", "sweeps", "metric", "truth",
              "answer_points", "rubric", "rubric_items"}, where)
    qid = _need(t, "id", str, where)
    where = f"questions.{qid}"
    file = _need(t, "file", str, where)
    if file not in files:
        raise UserError(f"spec: {where}.file: {file!r} is not in assignment.answer_files")
    kind = _need(t, "kind", str, where)
    if kind not in QUESTION_KINDS:
        raise UserError(f"spec: {where}.kind: {kind!r} is not one of {', '.join(QUESTION_KINDS)}")
    points = _positive(_need(t, "points", (int, float), where), f"{where}.points")
    q = dict(id=qid, file=file, key=_need(t, "key", str, where), kind=kind, points=float(points),
             prompt=t.get("prompt", ""))
    if kind == "optimum" or "sweep" in t:
        q["sweep"] = _need(t, "sweep", str, where)
        if q["sweep"] not in sweeps:
            raise UserError(f"spec: {where}.sweep: no sweep named {q['sweep']!r}")
    if "sweeps" in t:
        q["sweeps"] = tuple(_need(t, "sweeps", list, where))
        for s in q["sweeps"]:
            if s not in sweeps:
                raise UserError(f"spec: {where}.sweeps: no sweep named {s!r}")
    if kind == "optimum" or "metric" in t:
        q["metric"] = _need(t, "metric", str, where)
        if q["metric"] not in METRICS:
            raise UserError(f"spec: {where}.metric: {q['metric']!r} is not one of {', '.join(METRICS)}")
    if kind == "yesno":
        q["truth"] = _need(t, "truth", str, where)
        if q["truth"] not in TRUTHS:
            raise UserError(f"spec: {where}.truth: {q['truth']!r} is not one of {', '.join(TRUTHS)}")
        if q["truth"] == "noise_rank_correlation_positive" and not (q.get("sweeps") and q.get("metric")):
            raise UserError(f"spec: {where}: truth {q['truth']!r} needs 'sweeps' and 'metric'")
        if q["truth"] == "test_optimum_in_train_tie_set" and not q.get("sweep"):
            raise UserError(f"spec: {where}: truth {q['truth']!r} needs 'sweep'")
        ap = _need(t, "answer_points", (int, float), where)
        if not 0 <= ap <= points:
            raise UserError(f"spec: {where}.answer_points: must be between 0 and points")
        q["answer_points"] = float(ap)
    if kind in ("yesno", "text"):
        r = _need(t, "rubric", dict, where)
        _only(r, {"keywords", "min_keywords", "min_length"}, f"{where}.rubric")
        kws = _need(r, "keywords", list, f"{where}.rubric")
        if not kws or not all(isinstance(k, str) and k for k in kws):
            raise UserError(f"spec: {where}.rubric.keywords: must be a list of words")
        q["rubric"] = Rubric(tuple(k.lower() for k in kws),
                             int(_need(r, "min_keywords", int, f"{where}.rubric")),
                             int(_need(r, "min_length", int, f"{where}.rubric")))
        q["items"] = _items(t.get("rubric_items", []), points - q.get("answer_points", 0.0), f"{where}.rubric_items")
    elif "rubric_items" in t:
        raise UserError(f"spec: {where}.rubric_items: only yes/no and free-text questions are reviewed")
    return Question(**q)


def _items(raw, most: float, where: str) -> tuple[RubricItem, ...]:
    """Rubric items for review: each {id, text, points}; ids unique, points within what review decides."""
    if not isinstance(raw, list):
        raise UserError(f"spec: {where}: expected a list of {{id, text, points}} tables")
    items = []
    for i, t in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(t, dict):
            raise UserError(f"spec: {at}: expected a table with id, text, points")
        _only(t, {"id", "text", "points"}, at)
        item_id = _need(t, "id", str, at)
        if not item_id or not all(c.isalnum() or c in "-_" for c in item_id):
            raise UserError(f"spec: {at}.id: {item_id!r} must be letters, digits, - or _")
        pts = _need(t, "points", (int, float), at)
        if not math.isfinite(pts) or not -most <= pts <= most:
            raise UserError(f"spec: {at}.points: must be between -{most:g} and {most:g}")
        items.append(RubricItem(item_id, _need(t, "text", str, at), float(pts)))
    if len({i.id for i in items}) != len(items):
        raise UserError(f"spec: {where}: repeated id")
    return tuple(items)


def load_spec(path: str | Path | None = None) -> Spec:
    """Read and check a spec; every problem is one line naming the key."""
    path = Path(path) if path else DEFAULT_SPEC
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"spec: cannot read {path}: {e.strerror or e}")
    try:
        t = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"spec: {path.name} is not valid TOML: {e}")
    _only(t, {"assignment", "model", "training", "sweeps", "scoring", "questions", "similarity", "evidence"}, "top level")
    a = _need(t, "assignment", dict, "top level")
    _only(a, {"id", "title", "answer_files", "preamble"}, "assignment")
    m = _need(t, "model", dict, "top level")
    _only(m, {"input_dim", "hidden_dim", "output_dim"}, "model")
    tr = _need(t, "training", dict, "top level")
    _only(tr, {"epochs", "seeds", "dtype"}, "training")
    sc = _need(t, "scoring", dict, "top level")
    _only(sc, {"z", "near_fraction", "snap"}, "scoring")
    files = tuple(_need(a, "answer_files", list, "assignment"))
    sweeps = {name: _sweep(name, s) for name, s in _need(t, "sweeps", dict, "top level").items()}
    if not sweeps:
        raise UserError("spec: sweeps: at least one sweep is needed")
    seeds = _need(tr, "seeds", list, "training")
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise UserError("spec: training.seeds: must be a non-empty list of non-negative integers")
    if len(set(seeds)) != len(seeds):
        raise UserError("spec: training.seeds: repeated seed")
    dtype = _need(tr, "dtype", str, "training")
    if dtype not in ("float32", "float64"):
        raise UserError(f"spec: training.dtype: {dtype!r} is not float32 or float64")
    snap = sc.get("snap", "log")
    if snap not in ("log", "linear"):
        raise UserError(f"spec: scoring.snap: {snap!r} is not 'log' or 'linear'")
    near = _need(sc, "near_fraction", (int, float), "scoring")
    if not 0 <= near <= 1:
        raise UserError("spec: scoring.near_fraction: must be between 0 and 1")
    sim = t.get("similarity", {})
    if not isinstance(sim, dict):
        raise UserError("spec: similarity: expected a table")
    _only(sim, {"group", "copy"}, "similarity")
    thresholds = {}
    for key in ("group", "copy"):
        v = sim.get(key, {"group": 0.6, "copy": 0.9}[key])
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            raise UserError(f"spec: similarity.{key}: must be a number in (0, 1], got {v!r}")
        thresholds[f"{key}_threshold"] = float(v)
    evidence = _evidence(t.get("evidence", {}))
    questions = tuple(_question(i, q, sweeps, files) for i, q in enumerate(_need(t, "questions", list, "top level")))
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise UserError("spec: questions: repeated id")
    if len({(q.file, q.key) for q in questions}) != len(questions):
        raise UserError("spec: questions: two questions share a file and key")
    dims = {k: int(_positive(_need(m, k, int, "model"), f"model.{k}")) for k in ("input_dim", "hidden_dim", "output_dim")}
    return Spec(
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        assignment_id=_need(a, "id", str, "assignment"),
        title=_need(a, "title", str, "assignment"),
        answer_files=files,
        preamble=tuple(_need(a, "preamble", list, "assignment")),
        epochs=int(_positive(_need(tr, "epochs", int, "training"), "training.epochs")),
        seeds=tuple(seeds),
        dtype=dtype,
        sweeps=sweeps,
        z=float(_positive(_need(sc, "z", (int, float), "scoring"), "scoring.z")),
        near_fraction=float(near),
        snap=snap,
        questions=questions,
        **thresholds,
        **evidence,
        **dims,
    )


def _evidence(ev) -> dict:
    """The evidence rules (grader/assessment/evidence.py): the points fraction for an answer that is the best of
    the student's own complete runs but outside the reference's tie set (0: off), and whether an answer for a
    value the notebook never trained is flagged for review."""
    if not isinstance(ev, dict):
        raise UserError("spec: evidence: expected a table")
    _only(ev, {"own_runs_fraction", "flag_untried"}, "evidence")
    fraction = ev.get("own_runs_fraction", 0.5)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        raise UserError(f"spec: evidence.own_runs_fraction: must be a number from 0 to 1, got {fraction!r}")
    flag = ev.get("flag_untried", True)
    if not isinstance(flag, bool):
        raise UserError(f"spec: evidence.flag_untried: must be true or false, got {flag!r}")
    return {"own_runs_fraction": float(fraction), "flag_untried": flag}


def hyperparameter_value(name: str | None, value):
    """A grid value as people write it: a batch size is an integer (256, never 256.0), the rest floats."""
    if name in WHOLE_HYPERPARAMETERS and isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return float(value)

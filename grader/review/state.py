"""What the review serves: a graded OUT/ re-scored from its store, answer groups per question, decisions applied.

Loaded once when the server starts; a decision updates it in memory after its line is fsync'd.
Everything here is plain data and functions of it; the web layer only shows it and calls `decide`,
`split` and `publish`.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from grader.assessment.overrides import Override, apply_overrides, overrides_csv
from grader.assessment.rescore import rescore
from grader.assessment.similarity import group_answers, group_threshold
from grader.common.atomic import write_text_atomic
from grader.common.errors import UserError
from grader.common.names import display, is_valid_unicode, result_stem
from grader.grading.store import Store
from grader.review.decisions import DecisionLog, open_log

REVIEWED_KINDS = ("yesno", "text")


class Stale(Exception):
    """A save made from a page that no longer shows the current state (another tab saved first)."""

    def __init__(self, current: dict):
        super().__init__("stale")
        self.current = current


class Invalid(Exception):
    """A decision that cannot be taken as asked (no points, unknown item, too many points)."""


class NotFound(LookupError):
    """A group or student the question's queue never had: no save can make it current, so it is not Stale."""


@dataclass
class GroupView:
    """One group as the queue shows it."""

    key: str
    members: list[str]
    score: list[float]
    identical: bool
    version: str
    decision: dict | None
    mixed: bool


@dataclass
class ReviewState:
    out: Path
    spec: object
    ref: object
    hide: bool
    header: dict
    order: list[str]
    base: dict[str, dict]
    log: DecisionLog
    groups: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)
    current: dict[str, dict] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # reading ---------------------------------------------------------------------------------

    @property
    def questions(self) -> list:
        """The yes/no and free-text questions, and an optimum where the evidence rule flagged some answer (a value
        the notebook never trained)."""
        if getattr(self, "_reviewed", None) is None:
            self._reviewed = [q for q in self.spec.questions
                              if q.kind in REVIEWED_KINDS or (q.kind == "optimum" and self.flagged(q.id))]
        return self._reviewed

    def question(self, qid: str):
        return next((q for q in self.questions if q.id == qid), None)

    def flagged(self, qid: str) -> list[str]:
        """Students whose answer to qid awaits review (as graded, before any decision)."""
        return [s for s in self.order if ((self.base[s].get("questions") or {}).get(qid) or {}).get("review")]

    def label(self, student: str) -> str:
        """The student's name as pages show it; a key that is not the name (see `student_keys`) follows it."""
        name = str(self.base[student].get("student", student))
        return name if name == student else f"{name} ({student})"

    def answer_text(self, student: str, qid: str) -> str:
        answer = ((self.base[student].get("questions") or {}).get(qid) or {}).get("answer")
        if isinstance(answer, bool):
            return "yes" if answer else "no"
        return "" if answer is None else str(answer)

    def seq(self, qid: str, student: str) -> int:
        return self._seqs.get((qid, student), 0)

    def decision(self, qid: str, student: str) -> dict | None:
        return self._decided.get((qid, student))

    def version(self, qid: str, members) -> str:
        text = "\n".join(f"{m}\0{self.seq(qid, m)}" for m in members)
        return hashlib.sha256(f"{qid}\n{text}".encode("utf-8", "surrogatepass")).hexdigest()[:16]

    def group_views(self, qid: str) -> list[GroupView]:
        views = []
        for members in self.groups.get(qid, []):
            decisions = [self.decision(qid, m) for m in members]
            first = decisions[0]
            same = all(d is not None and first is not None and d["seq"] == first["seq"] for d in decisions)
            views.append(GroupView(members[0], list(members), list(self._scores.get((qid, members[0]), [1.0] * len(members))),
                                   self._identical.get((qid, members[0]), True), self.version(qid, members),
                                   first if same else None, not same and any(d is not None for d in decisions)))
        return views

    def find_group(self, qid: str, key: str) -> tuple[str, ...] | None:
        return next((g for g in self.groups.get(qid, []) if g[0] == key), None)

    def points_of(self, q, entry: dict) -> float:
        """A decision's points for the reviewed part: as typed, else the sum of its items' current points."""
        if entry.get("points") is not None:
            return min(float(entry["points"]), q.review_points)
        total = sum(i.points for i in (q.item(x) for x in entry.get("items", [])) if i is not None)
        return round(min(max(total, 0.0), q.review_points), 6)

    def comment_of(self, q, entry: dict) -> str:
        texts = [i.text for i in (q.item(x) for x in entry.get("items", [])) if i is not None]
        return "; ".join(texts + ([entry["comment"].strip()] if entry.get("comment", "").strip() else []))

    def describe(self, qid: str, entry: dict | None) -> dict | None:
        """A decision as pages and the API show it."""
        if entry is None:
            return None
        q = self.question(qid)
        return {"seq": entry["seq"], "time": entry["time"], "points": self.points_of(q, entry),
                "typed_points": entry.get("points"), "items": list(entry.get("items", [])),
                "comment": entry.get("comment", ""), "part": entry.get("part", ""), "students": len(entry["students"])}

    def overrides(self) -> list[Override]:
        return [o for s in self.order for o in self.overrides_for(s)]

    def result(self, student: str) -> dict:
        """The student's result as it stands: re-scored, with this review's decisions applied."""
        if student not in self.current:
            mine = self.overrides_for(student)
            self.current[student] = apply_overrides(self.base[student], mine, self.spec) if mine else self.base[student]
        return self.current[student]

    def overrides_for(self, student: str) -> list[Override]:
        """The overrides this review's decisions make for one student (what overrides.csv holds)."""
        out = []
        for q in self.questions:
            entry = self.decision(q.id, student)
            if entry is not None:
                name = str(self.base[student].get("student", student))  # what grade --overrides matches
                out.append(Override(name, q.id, self.points_of(q, entry), self.comment_of(q, entry), 0,
                                    "reason" if q.kind == "yesno" else ""))
        return out

    # deciding --------------------------------------------------------------------------------

    def decide(self, qid: str, key: str, version: str, *, items: list[str], points: float | None,
               comment: str) -> dict:
        """One decision for the whole group `key`; Stale when the group changed since `version` was read.
        A lone surrogate in the comment (JSON can spell one) becomes U+FFFD, as undecodable form bytes do."""
        q = self.question(qid)
        if q is None:
            raise Invalid(f"no reviewed question {qid!r}")
        unknown = [i for i in items if q.item(i) is None]
        if unknown:
            raise Invalid(f"{qid} has no rubric item {unknown[0]!r}")
        if points is not None and (not math.isfinite(points) or points < 0 or points > q.review_points + 1e-9):
            raise Invalid(f"points must be between 0 and {q.review_points:g}")
        if points is None and not items:
            raise Invalid("choose rubric items or type the points")
        comment = display(comment)
        with self.lock:
            members = self.find_group(qid, key)
            if members is None:
                raise NotFound("no such group")
            if self.version(qid, members) != version:
                raise Stale(self._current_value(qid, key))
            entry = self.log.append({"kind": "decide", "question": qid, "students": list(members),
                                     "points": points, "items": list(dict.fromkeys(items)), "comment": comment,
                                     "part": "reason" if q.kind == "yesno" else "", "base": version})
            self._take(entry)
            self._write_overrides()
            return entry

    def split(self, qid: str, student: str, version: str) -> dict:
        """Take one member out of its group, to be decided alone; Stale as for decide."""
        with self.lock:
            group = next((g for g in self.groups.get(qid, []) if student in g), None)
            if group is None:
                raise NotFound("no such student in this question's queue")
            if len(group) < 2 or self.version(qid, group) != version:
                raise Stale(self._current_value(qid, group[0]))
            entry = self.log.append({"kind": "split", "question": qid, "students": [student]})
            self._take(entry)
            return entry

    def _current_value(self, qid: str, key: str) -> dict:
        group = self.find_group(qid, key) or next((g for g in self.groups.get(qid, []) if key in g), None)
        if group is None:
            return {"group": key, "members": [], "decision": None, "version": None}
        decisions = {self.decision(qid, m)["seq"] if self.decision(qid, m) else None for m in group}
        one = self.decision(qid, group[0]) if len(decisions) == 1 else None
        return {"group": group[0], "members": list(group), "decision": self.describe(qid, one),
                "mixed": len(decisions) > 1, "version": self.version(qid, group)}

    def _take(self, entry: dict) -> None:
        qid = entry["question"]
        for s in entry["students"]:
            self._seqs[(qid, s)] = entry["seq"]
            self.current.pop(s, None)
        if entry["kind"] == "decide":
            for s in entry["students"]:
                self._decided[(qid, s)] = entry
        else:
            self._split(qid, entry["students"][0])
            group = next((g for g in self.groups.get(qid, []) if entry["students"][0] in g), ())
            for s in group:
                self._seqs[(qid, s)] = entry["seq"]

    def _split(self, qid: str, student: str) -> None:
        groups = self.groups.get(qid, [])
        for i, g in enumerate(groups):
            if student in g and len(g) > 1:
                rest = tuple(m for m in g if m != student)
                if g[0] == student:
                    self._scores[(qid, rest[0])] = [1.0] * len(rest)
                    self._identical[(qid, rest[0])] = False
                else:
                    old = self._scores.get((qid, g[0]), [1.0] * len(g))
                    self._scores[(qid, g[0])] = [sc for m, sc in zip(g, old) if m != student]
                self._scores[(qid, student)] = [1.0]
                self._identical[(qid, student)] = True
                groups[i] = rest
                groups.append((student,))
                groups.sort(key=lambda grp: (-len(grp), grp[0]))
                return

    def _write_overrides(self) -> None:
        write_text_atomic(self.out / "overrides.csv", overrides_csv(self.overrides()))

    # setup -----------------------------------------------------------------------------------

    def _build(self) -> None:
        self._seqs: dict[tuple[str, str], int] = {}
        self._decided: dict[tuple[str, str], dict] = {}
        self._scores: dict[tuple[str, str], list[float]] = {}
        self._identical: dict[tuple[str, str], bool] = {}
        threshold = group_threshold(self.spec)
        for q in self.questions:
            found = group_answers(((s, self.answer_text(s, q.id)) for s in self.flagged(q.id)),
                                  threshold=threshold, drop_yesno=q.kind == "yesno")
            self.groups[q.id] = [g.members for g in found]
            for g in found:
                self._scores[(q.id, g.members[0])] = list(g.score)
                self._identical[(q.id, g.members[0])] = g.identical
        known = set(self.order)
        for entry in self.log.entries:
            if self.question(entry["question"]) is None or not set(entry["students"]) <= known:
                self.log.notes.append(f"decision {entry['seq']} names a question or student this OUT/ no longer has; ignored")
                continue
            self._take(entry)


def load_state(out: str | Path, *, spec_path=None, reference_path=None, reset: bool = False, say=None) -> ReviewState:
    """Read a graded OUT/ (results.json, the store), re-score it, group the answers, replay the decisions."""
    from grader.assessment.reference_io import load_reference, check_covers
    from reference.spec import load_spec

    out = Path(out)
    doc = _results(out)
    spec = load_spec(spec_path or doc.get("spec") or None)
    ref_info = doc.get("reference") or {}
    ref_arg = reference_path or (None if ref_info.get("demo", True) else ref_info.get("path"))
    ref = load_reference(ref_arg, check_runs=False)
    check_covers(ref, spec)
    hide = bool((doc.get("options") or {}).get("hide_answers"))
    store = Store(out)
    order, base = [], {}
    for key, exact, listed in student_keys(doc["students"]):
        record = store.load(exact)
        stored = record["result"] if record else listed
        base[key] = rescore(stored, spec, ref, hide=hide)
        order.append(key)
    log = open_log(out / "review" / "decisions.jsonl", reset=reset)
    header = {k: v for k, v in doc.items() if k not in ("format", "students")}
    state = ReviewState(out, spec, ref, hide, header, order, base, log)
    state._build()
    if say:
        for note in log.notes:
            say(note)
    return state


def student_keys(listed: list) -> list[tuple[str, str, dict]]:
    """(key, exact name, entry) for each student of results.json.

    results.json shows names as valid Unicode, so folders b"dup\\xff" and b"dup\\xfe" both show as "dup" + U+FFFD;
    the exact name comes back from `student_hex`, and its unique file stem (`file`) finds the store entry.
    The key (in URLs, groups and the decision log) is the name itself where that shows as it is and is no
    other student's stem, else the stem: distinct students stay distinct, and plain names read as themselves.
    """
    found, stems = [], set()
    for entry in listed:
        name = entry.get("student") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            continue
        raw = entry.get("student_hex")
        try:
            exact = bytes.fromhex(raw).decode("utf-8", "surrogateescape") if isinstance(raw, str) and raw else name
        except ValueError:
            exact = name
        stem = result_stem({"file": entry.get("file"), "student": exact})
        if stem in stems:
            continue
        stems.add(stem)
        found.append((name, exact, stem, entry))
    return [(name if exact == name and is_valid_unicode(name) and (name == stem or name not in stems) else stem,
             exact, entry) for name, exact, stem, entry in found]


def _results(out: Path) -> dict:
    path = out / "results.json"
    if not out.is_dir():
        raise UserError(f"{out}: no such folder (give the OUT folder of `labgrader grade`)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{out}: not a graded folder (no results.json; run `labgrader grade ... --out {out}` first)")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path}: cannot be read as JSON: {e}")
    if not isinstance(doc, dict) or doc.get("format") != "labgrader-results/1" or not isinstance(doc.get("students"), list):
        raise UserError(f"{path}: not the results.json of `labgrader grade`")
    return doc


def publish(state: ReviewState) -> dict:
    """grades.csv, results.json, feedback and summary.html rebuilt from the store and the decisions; nothing executes."""
    from grader.reports import report

    with state.lock:
        results = [state.result(s) for s in state.order]
        header = {**state.header, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "spec_sha256": state.spec.sha256, "spec": str(state.spec.path), "reference": state.ref.summary(),
                  "review": {"decisions": len(state.log.entries), "log": "review/decisions.jsonl"}}
        report.write_outputs(state.out, header, results, state.spec)
        for r in results:
            report.write_feedback(state.out, r, state.spec, state.hide, state.ref)
        report.write_class_report(state.out, results, state.spec, state.ref)
        state._write_overrides()
    return {"students": len(results), "decisions": len(state.log.entries),
            "waiting": sum(1 for r in results if r.get("review"))}

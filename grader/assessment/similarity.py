"""Similar free-text answers: one measure for the review's answer groups and the class report's look-alikes.

Text is compared after normalising: Unicode NFKC, lowercase, punctuation replaced by spaces, spaces
collapsed; for yes/no questions the leading yes/no word is dropped, so only the reasons compare.
Answers equal after normalising are identical. Otherwise the measure is the cosine similarity of
TF-IDF vectors of character 3- to 5-grams within words (scikit-learn, sublinear tf), fitted on the
class's answers to that question: typos and word order barely move it, a different idea does.

- `group_answers`: identical answers first, then similar ones (at least the spec's group threshold
  to a group's first answer; no chaining), largest group first. Review decides one group at a time.
- `similar_pairs`: pairs of students whose answers are near-duplicates (at least the copy
  threshold), for the class report. A hint for a human, never a verdict.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, NamedTuple, Sequence

import numpy as np

MIN_WORDS = 8
THRESHOLD = 0.9
GROUP_THRESHOLD = 0.6
KINDS = ("text", "yesno")
MEASURE = ("cosine similarity of TF-IDF character 3-5-gram vectors (NFKC, lowercased, punctuation removed, "
           "leading yes/no dropped), fitted on the class's answers to the question")
_PUNCT = re.compile(r"[^\w\s]|_", re.UNICODE)


class SimilarPair(NamedTuple):
    student_a: str
    student_b: str
    question: str
    score: float


class Group(NamedTuple):
    """Students whose answers one decision covers; `members[0]` leads, `score[i]` is its similarity to it."""

    members: tuple[str, ...]
    score: tuple[float, ...]
    identical: bool


def words(text: str, *, drop_yesno: bool = False) -> list[str]:
    folded = unicodedata.normalize("NFKC", text).lower()
    tokens = _PUNCT.sub(" ", folded).split()
    if drop_yesno and tokens and tokens[0] in ("yes", "no"):
        tokens = tokens[1:]
    return tokens


def normalise(text: str, *, drop_yesno: bool = False) -> str:
    """The form two answers must share to count as identical."""
    return " ".join(words(text, drop_yesno=drop_yesno))


def cosine_matrix(texts: Sequence[str]) -> np.ndarray:
    """Pairwise cosine similarity (float32, n x n) of normalised texts; an empty text is similar to nothing."""
    n = len(texts)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if not any(t.strip() for t in texts):
        return np.zeros((n, n), dtype=np.float32)
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectors = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, lowercase=False,
                              dtype=np.float32).fit_transform(texts)
    return (vectors @ vectors.T).toarray()


def group_answers(answers: Iterable[tuple[str, str]], *, threshold: float = GROUP_THRESHOLD,
                  drop_yesno: bool = False) -> list[Group]:
    """(student, text) pairs -> groups, largest first (ties: first student's name).

    Identical answers (after normalising) always share a group. Distinct answers are then taken
    in order of how many students gave them; each one not yet grouped starts a group and takes
    every ungrouped answer at least `threshold` similar to it.
    """
    exact: dict[str, list[str]] = {}
    for student, text in answers:
        exact.setdefault(normalise(str(text), drop_yesno=drop_yesno), []).append(str(student))
    keys = sorted(exact, key=lambda k: (-len(exact[k]), min(exact[k])))
    for k in keys:
        exact[k].sort()
    sims = cosine_matrix(keys)
    taken = np.zeros(len(keys), dtype=bool)
    groups: list[Group] = []
    for i, key in enumerate(keys):
        if taken[i]:
            continue
        taken[i] = True
        members, score = list(exact[key]), [1.0] * len(exact[key])
        if key:
            near = np.flatnonzero(~taken & (sims[i] >= threshold))
            for j in near:
                taken[j] = True
                members += exact[keys[j]]
                score += [round(float(sims[i, j]), 3)] * len(exact[keys[j]])
        groups.append(Group(tuple(members), tuple(score), len(members) == len(exact[key])))
    groups.sort(key=lambda g: (-len(g.members), g.members[0]))
    return groups


def similar_pairs(results: Iterable[dict], spec, *, threshold: float | None = None, min_words: int = MIN_WORDS
                  ) -> list[SimilarPair]:
    """Every pair of students whose answers to one free-text or yes/no question are near-duplicates.

    Sorted by question (spec order), then highest score first; student_a < student_b. Answers
    shorter than min_words words are skipped: short answers agree by chance.
    """
    threshold = copy_threshold(spec) if threshold is None else threshold
    results = list(results)
    pairs: list[SimilarPair] = []
    for q in spec.questions:
        if q.kind not in KINDS:
            continue
        texts = []
        for r in results:
            answer = ((r.get("questions") or {}).get(q.id) or {}).get("answer")
            if not isinstance(answer, str):
                continue
            tokens = words(answer, drop_yesno=q.kind == "yesno")
            if len(tokens) >= min_words:
                texts.append((str(r.get("student", "")), " ".join(tokens)))
        texts.sort()
        sims = cosine_matrix([t for _, t in texts])
        found = []
        for i, j in zip(*np.nonzero(np.triu(sims >= threshold - 1e-6, k=1))):
            score = 1.0 if texts[i][1] == texts[j][1] else min(round(float(sims[i, j]), 3), 0.999)
            found.append(SimilarPair(texts[i][0], texts[j][0], q.id, score))
        pairs.extend(sorted(found, key=lambda p: (-p.score, p.student_a, p.student_b)))
    return pairs


def group_threshold(spec) -> float:
    return float(getattr(spec, "group_threshold", GROUP_THRESHOLD))


def copy_threshold(spec) -> float:
    return float(getattr(spec, "copy_threshold", THRESHOLD))

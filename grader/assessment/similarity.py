"""Near-duplicate free-text answers across a class, for the instructor's class report only.

Measure: Jaccard similarity |A ∩ B| / |A ∪ B| of the sets of word 3-gram shingles of two answers
to the same question, after Unicode NFKC folding, lowercasing, and replacing punctuation by
spaces; for yes/no questions the leading yes/no word is dropped, so only the reasons compare.
Answers shorter than MIN_WORDS words are ignored: short answers agree by chance.
A pair is reported when the similarity is at least THRESHOLD. It is a hint for a human, never a verdict.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, NamedTuple

SHINGLE = 3
MIN_WORDS = 8
THRESHOLD = 0.8
KINDS = ("text", "yesno")
MEASURE = (f"Jaccard similarity of word {SHINGLE}-gram shingles (NFKC, lowercased, punctuation removed, "
           "leading yes/no dropped)")
_PUNCT = re.compile(r"[^\w\s]|_", re.UNICODE)


class SimilarPair(NamedTuple):
    student_a: str
    student_b: str
    question: str
    score: float


def words(text: str, *, drop_yesno: bool = False) -> list[str]:
    folded = unicodedata.normalize("NFKC", text).lower()
    tokens = _PUNCT.sub(" ", folded).split()
    if drop_yesno and tokens and tokens[0] in ("yes", "no"):
        tokens = tokens[1:]
    return tokens


def shingles(tokens: list[str], n: int = SHINGLE) -> frozenset[tuple[str, ...]]:
    return frozenset(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 0.0
    return len(a & b) / len(a | b)


def similar_pairs(results: Iterable[dict], spec, *, threshold: float = THRESHOLD, min_words: int = MIN_WORDS,
                  n: int = SHINGLE) -> list[SimilarPair]:
    """Every pair of students whose answers to one free-text or yes/no question are near-duplicates.

    Sorted by question (spec order), then highest score first; student_a < student_b.
    """
    results = list(results)
    pairs: list[SimilarPair] = []
    for q in spec.questions:
        if q.kind not in KINDS:
            continue
        sets = []
        for r in results:
            answer = ((r.get("questions") or {}).get(q.id) or {}).get("answer")
            if not isinstance(answer, str):
                continue
            tokens = words(answer, drop_yesno=q.kind == "yesno")
            if len(tokens) >= max(min_words, n):
                sets.append((str(r.get("student", "")), shingles(tokens, n)))
        sets.sort(key=lambda s: s[0])
        found = []
        for i, (name_a, a) in enumerate(sets):
            for name_b, b in sets[i + 1:]:
                if min(len(a), len(b)) < threshold * max(len(a), len(b)):
                    continue
                score = jaccard(a, b)
                if score >= threshold:
                    found.append(SimilarPair(name_a, name_b, q.id, round(score, 3)))
        pairs.extend(sorted(found, key=lambda p: (-p.score, p.student_a, p.student_b)))
    return pairs

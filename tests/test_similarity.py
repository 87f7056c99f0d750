import pytest

from grader.assessment.similarity import jaccard, shingles, similar_pairs, words

TEXT = ("A larger learning rate takes bigger steps along the gradient, so each update moves the weights "
        "further, and a smaller batch gives more updates per epoch with noise that helps escape saddle points.")


def _result(student, **answers):
    qids = {"d": "ex1.d", "b": "ex1.b", "c": "ex2.c", "dd": "ex2.d"}
    return {"student": student, "questions": {qids[k]: {"answer": v} for k, v in answers.items()}}


def test_words_and_jaccard_are_the_documented_measure():
    assert words("Yes, the Loss—went DOWN!", drop_yesno=True) == ["the", "loss", "went", "down"]
    assert words("Yes, the loss", drop_yesno=False)[0] == "yes"
    a, b = shingles(words("a b c d e")), shingles(words("a b c d f"))
    assert a == {("a", "b", "c"), ("b", "c", "d"), ("c", "d", "e")}
    assert jaccard(a, b) == pytest.approx(2 / 4)
    assert jaccard(frozenset(), frozenset()) == 0.0


def test_identical_texts_are_flagged(sp):
    pairs = similar_pairs([_result("zoe", d=TEXT), _result("amy", d=TEXT)], sp)
    assert len(pairs) == 1
    p = pairs[0]
    assert (p.student_a, p.student_b, p.question, p.score) == ("amy", "zoe", "ex1.d", 1.0)


def test_case_punctuation_and_spacing_do_not_hide_a_copy(sp):
    copy = TEXT.upper().replace(",", " ;").replace(" ", "   ")
    pairs = similar_pairs([_result("a", d=TEXT), _result("b", d=copy)], sp)
    assert [p.score for p in pairs] == [1.0]


def test_near_identical_text_is_flagged_with_its_score(sp):
    edited = TEXT.replace("saddle points.", "saddle points and plateaus.")
    a, b = shingles(words(TEXT)), shingles(words(edited))
    expect = round(len(a & b) / len(a | b), 3)
    assert 0.8 <= expect < 1.0
    pairs = similar_pairs([_result("a", d=TEXT), _result("b", d=edited)], sp)
    assert [(p.question, p.score) for p in pairs] == [("ex1.d", expect)]


def test_different_texts_are_not_flagged(sp):
    other = ("Dropout randomly removes units while batch normalization uses noisy minibatch statistics; "
             "both act as regularizers like the noise of SGD.")
    half = " ".join(TEXT.split()[:18]) + " and that is all I can say about why it trains faster in practice."
    assert similar_pairs([_result("a", d=TEXT), _result("b", d=other), _result("c", d=half)], sp) == []


def test_short_answers_are_ignored_even_when_identical(sp):
    short = "because of the larger steps"
    assert similar_pairs([_result("a", d=short), _result("b", d=short)], sp) == []
    assert len(similar_pairs([_result("a", d=short), _result("b", d=short)], sp, min_words=5)) == 1


def test_yes_no_reasons_compare_without_the_leading_word(sp):
    reason = "the larger rate overfits the training set so the test optimum is a smaller learning rate"
    pairs = similar_pairs([_result("a", b=f"Yes, {reason}"), _result("b", b=f"no: {reason}")], sp)
    assert [(p.question, p.score) for p in pairs] == [("ex1.b", 1.0)]


def test_pairs_stay_within_one_question_and_skip_non_text(sp):
    results = [_result("a", d=TEXT), _result("b", dd=TEXT), _result("c", d=True, b=None), {"student": "d"}]
    assert similar_pairs(results, sp) == []


def test_every_pair_once_sorted_by_question_then_score(sp):
    edited = TEXT.replace("saddle points.", "saddle points and plateaus.")
    results = [_result("c", d=TEXT, dd=TEXT), _result("a", d=TEXT, dd=TEXT), _result("b", d=edited)]
    pairs = similar_pairs(results, sp)
    assert [(p.question, p.student_a, p.student_b) for p in pairs] == [
        ("ex1.d", "a", "c"), ("ex1.d", "a", "b"), ("ex1.d", "b", "c"), ("ex2.d", "a", "c")]
    assert pairs[0].score == 1.0 and pairs[1].score < 1.0
    assert pairs[0]._asdict() == {"student_a": "a", "student_b": "c", "question": "ex1.d", "score": 1.0}

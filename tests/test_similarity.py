import pytest

from grader.assessment.similarity import cosine_matrix, group_answers, normalise, similar_pairs, words

TEXT = ("A larger learning rate takes bigger steps along the gradient, so each update moves the weights "
        "further, and a smaller batch gives more updates per epoch with noise that helps escape saddle points.")


def _result(student, **answers):
    qids = {"d": "ex1.d", "b": "ex1.b", "c": "ex2.c", "dd": "ex2.d"}
    return {"student": student, "questions": {qids[k]: {"answer": v} for k, v in answers.items()}}


def test_words_and_normalise_fold_case_space_punctuation_and_yesno():
    assert words("Yes, the Loss—went DOWN!", drop_yesno=True) == ["the", "loss", "went", "down"]
    assert words("Yes, the loss", drop_yesno=False)[0] == "yes"
    assert normalise("  Bigger   STEPS, more updates!! ") == normalise("bigger steps more updates")


def test_cosine_is_one_for_the_same_text_and_low_for_another_idea():
    other = "Dropout randomly removes units while batch normalization uses noisy minibatch statistics."
    typo = TEXT.replace("gradient", "gradiant").replace("weights", "wieghts")
    sims = cosine_matrix([normalise(TEXT), normalise(typo), normalise(other)])
    assert sims[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert sims[0, 1] > 0.9 > 0.3 > sims[0, 2]
    assert cosine_matrix([]).shape == (0, 0) and cosine_matrix(["", " "]).max() == 0


def test_groups_identical_first_then_similar_largest_first_without_chaining():
    para = "Bigger learning rates take bigger steps so the weights move further each update."
    answers = [("c", TEXT), ("a", TEXT.upper() + "!!"), ("b", TEXT.replace("gradient", "gradiant")),
               ("d", para), ("e", para.lower()), ("f", "i dont know"), ("g", "")]
    groups = group_answers(answers, threshold=0.6)
    assert [g.members for g in groups] == [("a", "c", "b"), ("d", "e"), ("f",), ("g",)]
    assert groups[0].score[:2] == (1.0, 1.0) and 0.6 <= groups[0].score[2] < 1.0
    assert not groups[0].identical and groups[1].identical
    exact = group_answers(answers, threshold=1.01)
    assert [g.members for g in exact] == [("a", "c"), ("d", "e"), ("b",), ("f",), ("g",)]


def test_yes_no_groups_compare_the_reasons():
    groups = group_answers([("a", "Yes, overfitting"), ("b", "no. Overfitting")], drop_yesno=True)
    assert [g.members for g in groups] == [("a", "b")]


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
    expect = round(float(cosine_matrix([normalise(TEXT), normalise(edited)])[0, 1]), 3)
    assert sp.copy_threshold <= expect < 1.0
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

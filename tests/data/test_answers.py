"""Answer normalisation, matching and recall@k against hand-checked cases."""

import numpy as np
import pytest

from orqa_realm.data import answers


@pytest.mark.parametrize("text, normalized", [
    ("The Denver Broncos", "denver broncos"),
    ("  Denver   Broncos! ", "denver broncos"),
    ("a tale of an apple", "tale of apple"),
    ("U.S.", "us"),
    ("Theatre", "theatre"),  # 'the' only as a whole word
    ("24–10", "24–10"),  # the en dash is not ASCII punctuation in SQuAD's normalisation
])
def test_squad_normalisation(text, normalized):
  assert answers.normalize_answer(text) == normalized


def test_exact_match_is_max_over_references():
  assert answers.exact_match("the Broncos", ["Denver Broncos", "Broncos"])
  assert not answers.exact_match("Broncos", ["Denver Broncos"])


def test_regex_answers_match_anywhere_case_insensitively():
  pattern = r"20\s?,?\s?(32|40)0\s?-?\s?f(ee|oo)t|6,194-meter"
  assert answers.exact_match("about 20,320 feet", [pattern], kind="regex")
  assert answers.has_answer("Mount McKinley is 6,194-METER tall.", [pattern], kind="regex")
  assert not answers.has_answer("It is 19,000 feet tall.", [pattern], kind="regex")


def test_has_answer_is_token_level():
  text = "The game was played on February 7, 2016, at Levi's Stadium."
  assert answers.has_answer(text, ["February 7, 2016"])
  assert answers.has_answer(text, ["levis stadium"])
  assert not answers.has_answer(text, ["201"])  # no match inside a token
  assert not answers.has_answer(text, ["Stadium Levi's"])
  assert not answers.has_answer(text, ["the"])  # normalises to nothing


def test_recall_at_k():
  hits = np.array([[False, True, False], [False, False, False], [True, False, False]])
  assert answers.recall_at_k(hits, [1, 2, 3]) == {1: 1 / 3, 2: 2 / 3, 3: 2 / 3}
  with pytest.raises(ValueError, match="recall@5 needs at least 5 results"):
    answers.recall_at_k(hits, [5])

"""DeepCT's data on real text: words are BERT's pre-tokenized words, query term recall equals a
direct count over the raw questions, targets sit at each word's first piece, and a passage is
rewritten with each term's largest rounded weight."""

import gzip
import json

import numpy as np
import pytest

from orqa_realm.data import deepct
from orqa_realm.encode.deepct import word_splitter
from orqa_realm.index import bm25
from tests.conftest import DEMO_SQUAD

ANALYZER = dict(stemmer="english", stopwords="en")


@pytest.fixture(scope="module")
def splitter(tokenizer):
  return word_splitter(tokenizer, ANALYZER)


@pytest.fixture(scope="module")
def paragraph():
  """The first paragraph of the bundled SQuAD slice and its questions."""
  with gzip.open(DEMO_SQUAD, "rt", encoding="utf-8") as f:
    first = json.load(f)["data"][0]["paragraphs"][0]
  return first["context"], [qa["question"] for qa in first["qas"]]


def test_words_are_the_pre_tokenizers_words_at_their_first_piece(tokenizer, splitter, paragraph):
  text, _ = paragraph
  backend = tokenizer.hf_tokenizer.backend_tokenizer
  expected = [word for word, _ in backend.pre_tokenizer.pre_tokenize_str(
      backend.normalizer.normalize_str(text))]
  token_ids = np.array([tokenizer.cls_id, *tokenizer.tokenize([text])[0], tokenizer.sep_id])
  positions, words = splitter.word_strings(token_ids)
  assert words == expected
  pieces = tokenizer.hf_tokenizer.convert_ids_to_tokens(token_ids.tolist())
  assert positions[0] == 1  # [CLS] is no word
  assert all(not pieces[p].startswith("##") for p in positions)
  # Every piece between two first pieces is a continuation.
  starts = set(positions.tolist())
  assert all(pieces[p].startswith("##") for p in range(1, len(pieces) - 1) if p not in starts)


def test_query_term_recall_is_a_direct_count_over_the_raw_questions(tokenizer, splitter,
                                                                    paragraph):
  _, questions = paragraph
  recall = deepct.query_term_recall(
      [set(splitter.text_terms(ids)) for ids in tokenizer.tokenize(questions)])
  # BM25's analyzer on each raw question (ASCII text: BERT's normalisation changes nothing it
  # keeps).
  raw_terms = [set(terms) for terms in bm25.analyzer(bm25.BM25Settings())(questions)]
  expected = {term: sum(term in terms for terms in raw_terms) / len(questions)
              for term in set().union(*raw_terms)}
  assert recall.keys() == expected.keys()
  for term, value in expected.items():
    assert recall[term] == pytest.approx(value), term
  assert max(recall.values()) <= 1.0 and len(questions) > 1


def test_targets_sit_at_each_words_first_piece(tokenizer, splitter, paragraph):
  text, questions = paragraph
  recall = deepct.query_term_recall(
      [set(splitter.text_terms(ids)) for ids in tokenizer.tokenize(questions)])
  token_ids = np.array([tokenizer.cls_id, *tokenizer.tokenize([text])[0], tokenizer.sep_id])
  words = splitter.input_words(token_ids)
  targets, mask = deepct.word_targets(words, recall, 200)
  positions, strings = splitter.word_strings(token_ids)
  for position, word in zip(positions, strings):
    terms = bm25.analyzer(bm25.BM25Settings())([word])[0]
    assert mask[position] == (1.0 if terms else 0.0), word
    assert targets[position] == pytest.approx(max((recall.get(t, 0.0) for t in terms),
                                                  default=0.0)), word
  # Nothing but first pieces is read, and some word of the paragraph is in its questions.
  assert set(np.flatnonzero(mask)) <= set(positions.tolist())
  assert targets.max() > 0


def test_rewriting_takes_each_terms_largest_rounded_weight():
  words = deepct.InputWords(np.array([1, 2, 4, 5]),
                            (("norman",), ("franc",), (), ("norman",)))
  weights = np.zeros(8, np.float32)
  weights[[1, 2, 3, 4, 5]] = [0.2, 0.004, 0.9, 0.7, 0.46]
  frequencies = deepct.term_frequencies(words, weights, scale=10)
  # norman: max(round(2.0), round(4.6)); franc: round(0.04) = 0 is dropped; position 3 is no
  # word's first piece and position 4's word has no term.
  assert frequencies == {"norman": 5}
  assert deepct.rewritten_terms({"b": 2, "a": 1}) == ["a", "b", "b"]

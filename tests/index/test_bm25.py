"""BM25 over a block store: scores against Lucene's formula in NumPy, the saved index and its
refusals."""

import collections
import math

import numpy as np
import pytest

from orqa_realm.data.blocks import build_block_store
from orqa_realm.data.documents import Document
from orqa_realm.data.qa import read_squad
from orqa_realm.core.errors import InputError
from orqa_realm.index.bm25 import (BM25Config, BM25Searcher, BM25Settings, block_text,
                                   open_or_build)
from tests.conftest import DEMO_SQUAD


@pytest.fixture(scope="module")
def searcher(squad_block_store):
  return BM25Searcher.build(squad_block_store)


def lucene_bm25(query_words, block_words, k1, b):
  """[blocks] scores: sum over the query's words (repeats count) of
  idf x tf / (tf + k1 (1 - b + b dl / avgdl)), idf = log(1 + (N - df + 0.5) / (df + 0.5))."""
  num_blocks = len(block_words)
  average_length = np.mean([len(words) for words in block_words])
  document_frequency = collections.Counter(word for words in block_words for word in set(words))
  counts = [collections.Counter(words) for words in block_words]
  scores = np.zeros(num_blocks)
  for word in query_words:
    df = document_frequency.get(word, 0)
    if not df:
      continue
    idf = math.log(1 + (num_blocks - df + 0.5) / (df + 0.5))
    for block, (count, words) in enumerate(zip(counts, block_words)):
      tf = count[word]
      scores[block] += idf * tf / (tf + k1 * (1 - b + b * len(words) / average_length))
  return scores


def test_scores_equal_lucene_bm25_on_real_questions(squad_block_store, searcher):
  store = squad_block_store
  block_words = searcher.tokenize([block_text(store, block) for block in range(len(store))])
  questions = [example.question for example in read_squad(DEMO_SQUAD)[::1000]]
  result = searcher.search_texts(questions, 20)
  assert result.ids.shape == (len(questions), 20) and result.ids.dtype == np.int64
  for question, ids, scores in zip(questions, result.ids, result.scores):
    expected = lucene_bm25(searcher.tokenize([question])[0], block_words, k1=0.9, b=0.4)
    np.testing.assert_allclose(scores, expected[ids], rtol=1e-5)
    np.testing.assert_allclose(scores, np.sort(expected)[::-1][:20], rtol=1e-5)


def test_words_are_stemmed_and_stop_words_dropped(searcher):
  # Lucene's English stop words (as in Anserini): "the" and "in" go, "were" stays.
  assert searcher.tokenize(["Were the Broncos playing in Denver?"]) == [
      ["were", "bronco", "play", "denver"]]
  unstemmed = BM25Settings(stemmer="", stopwords="")
  assert BM25Searcher(searcher.retriever, unstemmed, searcher.num_rows).tokenize(
      ["the Broncos"]) == [["the", "broncos"]]


def test_a_question_sharing_no_word_scores_zero(searcher):
  result = searcher.search_texts(["zzzqqq xxyyzz"], 3)
  assert np.all(result.scores == 0)
  with pytest.raises(ValueError, match="k=0"):
    searcher.search_texts(["Warsaw"], 0)


def test_saved_index_searches_the_same_and_refuses_another_store_or_settings(
    squad_block_store, searcher, tmp_path, tokenizer):
  directory = str(tmp_path / "bm25")
  built = open_or_build(squad_block_store, BM25Config(BM25Settings(), directory))
  loaded = open_or_build(squad_block_store, BM25Config(BM25Settings(), directory))
  questions = ["Which NFL team represented the AFC at Super Bowl 50?", "Where is Warsaw?"]
  for other in (built, loaded):
    result, expected = other.search_texts(questions, 10), searcher.search_texts(questions, 10)
    np.testing.assert_array_equal(result.ids, expected.ids)
    np.testing.assert_allclose(result.scores, expected.scores)

  with pytest.raises(InputError, match="built with .*k1=0.9.*not the requested .*k1=1.2"):
    open_or_build(squad_block_store, BM25Config(BM25Settings(k1=1.2), directory))

  other_store = build_block_store([Document("d", "T", "Some other text.")], tokenizer,
                                  tmp_path / "other_store")
  with pytest.raises(InputError, match="built from a block store with"):
    open_or_build(other_store, BM25Config(BM25Settings(), directory))

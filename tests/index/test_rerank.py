"""Reranking a first-stage ranking: the top `depth` reordered by the second stage's scores
(ties in first-stage order), the rest kept after them, scored below."""

import numpy as np
import pytest

from orqa_realm.core.errors import InputError
from orqa_realm.encode.rerank import RerankSettings
from orqa_realm.index.rerank import RerankingSearcher, rerank
from orqa_realm.index.searcher import SearchResult


def test_rerank_reorders_the_top_depth_and_keeps_the_rest_below():
  first = SearchResult(np.array([[7, 3, 5, 9, 1]]), np.array([[5.0, 4.0, 3.0, 2.0, 1.0]]))
  result = rerank(first, np.array([[0.1, 0.9, 0.1]], np.float32))
  np.testing.assert_array_equal(result.ids, [[3, 7, 5, 9, 1]])  # 7 before 5: a tie, kept
  np.testing.assert_allclose(result.scores[0, :3], [0.9, 0.1, 0.1])
  assert result.scores[0, 3] < result.scores[0, 2] and result.scores[0, 4] < result.scores[0, 3]


def test_interpolation_adds_the_weighted_z_scores_of_both_stages():
  first = SearchResult(np.array([[7, 3, 5, 9]]), np.array([[9.0, 4.0, 2.0, 1.0]]))
  second = np.array([[0.2, 0.5, 0.4]], np.float32)
  z = lambda x: (x - x.mean()) / x.std()
  expected = z(second[0].astype(np.float64)) + 2.0 * z(np.array([9.0, 4.0, 2.0]))
  result = rerank(first, second, first_stage_weight=2.0)
  order = np.argsort(-expected, kind="stable")
  np.testing.assert_array_equal(result.ids[0, :3], np.array([7, 3, 5])[order])
  np.testing.assert_allclose(result.scores[0, :3], expected[order], rtol=1e-6)
  # The cross-encoder alone would put 3 first; the first stage's confidence in 7 outvotes it.
  assert rerank(first, second).ids[0, 0] == 3 and result.ids[0, 0] == 7
  assert result.ids[0, 3] == 9


class FixedSearcher:
  """A first stage returning blocks 0..k-1 in order for every text."""
  num_rows = 10

  def search_texts(self, texts, k):
    ids = np.tile(np.arange(k), (len(texts), 1))
    return SearchResult(ids, -ids.astype(np.float32))


def test_reranking_searcher_scores_only_the_top_depth():
  seen = []

  def score(texts, ids):  # the higher the block id, the better
    seen.append(ids.shape)
    return ids.astype(np.float32)

  searcher = RerankingSearcher(FixedSearcher(), score, depth=4)
  result = searcher.search_texts(["a", "b"], 6)
  assert seen == [(2, 4)]
  np.testing.assert_array_equal(result.ids, [[3, 2, 1, 0, 4, 5]] * 2)
  top = searcher.search_texts(["a"], 2)  # fewer asked than reranked: the reranked best two
  np.testing.assert_array_equal(top.ids, [[3, 2]])
  # Weighted enough, the first stage's order (0 first) wins back.
  interpolated = RerankingSearcher(FixedSearcher(), score, depth=4, first_stage_weight=2.0)
  np.testing.assert_array_equal(interpolated.search_texts(["a"], 4).ids, [[0, 1, 2, 3]])


def test_a_negative_first_stage_weight_is_refused():
  first = SearchResult(np.array([[1, 2]]), np.array([[2.0, 1.0]]))
  with pytest.raises(ValueError, match="reverse its ranking"):
    rerank(first, np.array([[0.0, 1.0]]), first_stage_weight=-1.0)
  with pytest.raises(InputError, match="reverse the first stage's ranking"):
    RerankSettings(first_stage_weight=-0.5)

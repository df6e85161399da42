"""Reranking a first-stage ranking: the top `depth` reordered by the second stage's scores
(ties in first-stage order), the rest kept after them, scored below."""

import numpy as np

from orqa_realm.index.rerank import RerankingSearcher, rerank
from orqa_realm.index.searcher import SearchResult


def test_rerank_reorders_the_top_depth_and_keeps_the_rest_below():
  first = SearchResult(np.array([[7, 3, 5, 9, 1]]), np.array([[5.0, 4.0, 3.0, 2.0, 1.0]]))
  result = rerank(first, np.array([[0.1, 0.9, 0.1]], np.float32))
  np.testing.assert_array_equal(result.ids, [[3, 7, 5, 9, 1]])  # 7 before 5: a tie, kept
  np.testing.assert_allclose(result.scores[0, :3], [0.9, 0.1, 0.1])
  assert result.scores[0, 3] < result.scores[0, 2] and result.scores[0, 4] < result.scores[0, 3]


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

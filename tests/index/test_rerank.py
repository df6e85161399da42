"""Reranking a first-stage ranking: the top `depth` reordered by the second stage's scores
(ties in first-stage order), the rest kept after them, scored below."""

import numpy as np

from orqa_realm.index.rerank import rerank
from orqa_realm.index.searcher import SearchResult


def test_rerank_reorders_the_top_depth_and_keeps_the_rest_below():
  first = SearchResult(np.array([[7, 3, 5, 9, 1]]), np.array([[5.0, 4.0, 3.0, 2.0, 1.0]]))
  result = rerank(first, np.array([[0.1, 0.9, 0.1]], np.float32))
  np.testing.assert_array_equal(result.ids, [[3, 7, 5, 9, 1]])  # 7 before 5: a tie, kept
  np.testing.assert_allclose(result.scores[0, :3], [0.9, 0.1, 0.1])
  assert result.scores[0, 3] < result.scores[0, 2] and result.scores[0, 4] < result.scores[0, 3]

"""Hybrid fusion: per-list normalisation, missing blocks given the list's minimum, the weighted
sum, against direct computations."""

import numpy as np
import pytest

from orqa_realm.index.fusion import HybridSearcher, fuse_rankings, normalize_scores
from orqa_realm.index.searcher import SearchResult


def test_normalisations():
  np.testing.assert_allclose(normalize_scores(np.array([3.0, 2.0, 1.0]), "minmax"), [1, 0.5, 0])
  scores = np.array([5.0, 1.0, 0.0])
  np.testing.assert_allclose(normalize_scores(scores, "zscore"),
                             (scores - scores.mean()) / scores.std())
  np.testing.assert_array_equal(normalize_scores(np.array([2.0, 2.0]), "minmax"), [0, 0])
  with pytest.raises(ValueError, match="unknown score normalisation"):
    normalize_scores(scores, "rank")


def test_a_block_missing_from_one_list_gets_that_lists_minimum():
  # Dense finds blocks 7, 3, 5; BM25 finds 3, 9, 7. Block 5 is missing from BM25 and 9 from dense.
  dense = SearchResult(np.array([[7, 3, 5]]), np.array([[0.9, 0.5, 0.1]], np.float32))
  sparse = SearchResult(np.array([[3, 9, 7]]), np.array([[20.0, 12.0, 10.0]], np.float32))
  fused = fuse_rankings(dense, sparse, 4, alpha=0.5, normalization="minmax")
  dense_normalized = {7: 1.0, 3: 0.5, 5: 0.0, 9: 0.0}  # 9 missing: the list's minimum, 0
  sparse_normalized = {3: 1.0, 9: 0.2, 7: 0.0, 5: 0.0}  # 5 missing: the list's minimum, 0
  expected = {block: dense_normalized[block] + 0.5 * sparse_normalized[block]
              for block in dense_normalized}
  order = sorted(expected, key=lambda block: (-expected[block], block))
  assert fused.ids.tolist() == [order] and fused.ids.dtype == np.int64
  np.testing.assert_allclose(fused.scores[0], [expected[block] for block in order], rtol=1e-6)
  assert order == [3, 7, 9, 5]


def test_fusion_equals_a_direct_formula_on_random_rankings():
  rng = np.random.default_rng(0)
  num_blocks, depth, k, alpha = 50, 12, 5, 0.7
  dense_scores = rng.normal(size=(4, num_blocks))
  sparse_scores = rng.gamma(2.0, size=(4, num_blocks))

  def ranking(scores):
    ids = np.argsort(-scores, axis=1)[:, :depth]
    return SearchResult(ids, np.take_along_axis(scores, ids, axis=1).astype(np.float32))

  dense, sparse = ranking(dense_scores), ranking(sparse_scores)
  fused = fuse_rankings(dense, sparse, k, alpha=alpha, normalization="zscore")
  for query in range(4):
    totals = {}
    for result, weight in ((dense, 1.0), (sparse, alpha)):
      listed = result.scores[query].astype(np.float64)
      normalized = (listed - listed.mean()) / listed.std()
      values = dict(zip(result.ids[query].tolist(), normalized))
      for block in set(dense.ids[query]) | set(sparse.ids[query]):
        totals[block] = totals.get(block, 0.0) + weight * values.get(block, normalized.min())
    best = sorted(totals, key=lambda block: (-totals[block], block))[:k]
    assert fused.ids[query].tolist() == best
    np.testing.assert_allclose(fused.scores[query], [totals[b] for b in best], rtol=1e-5)


class FixedSearcher:
  """A text searcher that ranks blocks by fixed scores, whatever the text."""

  def __init__(self, scores):
    self.scores = np.asarray(scores, np.float32)
    self.asked = []

  @property
  def num_rows(self):
    return len(self.scores)

  def search_texts(self, texts, k):
    self.asked.append(k)
    ids = np.argsort(-self.scores, kind="stable")[:k]
    return SearchResult(np.tile(ids, (len(texts), 1)), np.tile(self.scores[ids], (len(texts), 1)))


def test_hybrid_searcher_takes_k_prime_from_each_list():
  dense, sparse = FixedSearcher(np.arange(10.0)), FixedSearcher(np.arange(10.0)[::-1])
  hybrid = HybridSearcher(dense, sparse, alpha=2.0, depth=4)
  result = hybrid.search_texts(["a", "b"], 3)
  assert dense.asked == sparse.asked == [4]
  expected = fuse_rankings(dense.search_texts(["a", "b"], 4), sparse.search_texts(["a", "b"], 4),
                           3, alpha=2.0)
  np.testing.assert_array_equal(result.ids, expected.ids)
  assert result.ids[0].tolist() == [0, 1, 9]  # BM25's best three outweigh dense's at alpha 2
  assert hybrid.search_texts(["a"], 6).ids.shape == (1, 6) and dense.asked[-1] == 6  # k' >= k
  with pytest.raises(ValueError, match="must index the same block store"):
    HybridSearcher(dense, FixedSearcher(np.arange(5.0)))

"""Hybrid retrieval: a dense and a sparse (BM25) ranking fused by a weighted sum of normalised
scores.

Each searcher returns its top k' blocks (k' = max(`depth`, k)); each list's scores are
normalised on their own (inner products and BM25 scores live on unrelated scales); a block found
by one list only is given the other list's minimum, as if it ranked just below that list's k'-th
block; fused = dense + alpha x sparse, and the top k of the union is returned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import numpy as np

from orqa_realm.core.config import setting
from orqa_realm.index.searcher import SearchResult, TextSearcher, check_k

Normalization = Literal["minmax", "zscore"]
NORMALIZATIONS = ("minmax", "zscore")


def normalize_scores(scores: np.ndarray, method: Normalization) -> np.ndarray:
  """Scores of one ranked list mapped to a common scale: "minmax" to [0, 1], "zscore" to mean 0
  and standard deviation 1. A list of equal scores maps to zeros."""
  scores = np.asarray(scores, np.float64)  # [k']
  if method == "minmax":
    low, spread = scores.min(), scores.max() - scores.min()
  elif method == "zscore":
    low, spread = scores.mean(), scores.std()
  else:
    raise ValueError(f"unknown score normalisation {method!r}; expected one of {NORMALIZATIONS}")
  return (scores - low) / spread if spread > 0 else np.zeros_like(scores)


def _scores_of(candidates: np.ndarray, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
  """The score of each candidate in one list, or the list's minimum where it is missing."""
  found = np.full(len(candidates), scores.min())  # [candidates]
  found[np.searchsorted(candidates, ids)] = scores  # `candidates` is sorted and holds all ids
  return found


def fuse_rankings(dense: SearchResult, sparse: SearchResult, k: int, *, alpha: float,
                  normalization: Normalization = "minmax") -> SearchResult:
  """The top k blocks of each query by normalised dense + alpha x normalised sparse score.

  Args:
    dense, sparse: [num_queries, k'] rankings of the same queries (k' >= k).
    k: blocks returned per query.
    alpha: weight of the sparse scores.
    normalization: how each list's scores are normalised before the sum.
  Returns:
    [num_queries, k] block ids and fused scores, best first (ties by block id).
  """
  ids, fused_scores = [], []
  for dense_ids, dense_scores, sparse_ids, sparse_scores in zip(dense.ids, dense.scores,
                                                                sparse.ids, sparse.scores):
    candidates = np.union1d(dense_ids, sparse_ids)  # [candidates] sorted
    fused = (_scores_of(candidates, dense_ids, normalize_scores(dense_scores, normalization))
             + alpha * _scores_of(candidates, sparse_ids,
                                  normalize_scores(sparse_scores, normalization)))
    best = np.argsort(-fused, kind="stable")[:k]
    ids.append(candidates[best])
    fused_scores.append(fused[best])
  return SearchResult(np.stack(ids).astype(np.int64), np.stack(fused_scores).astype(np.float32))


@dataclasses.dataclass(frozen=True)
class FusionConfig:
  """How a hybrid searcher fuses its dense and BM25 rankings."""
  alpha: float = setting(1.0, "Weight of BM25 in hybrid fusion.", flag="hybrid_alpha")
  depth: int = setting(
      1000, "k': blocks taken from each ranking before fusing (at least the k asked for); a "
      "block missing from one ranking gets that ranking's k'-th score.", flag="hybrid_depth")
  normalization: Normalization = setting(
      "minmax", "How each ranking's scores are normalised before fusing.",
      flag="hybrid_normalization")


@dataclasses.dataclass(frozen=True)
class HybridSearcher:
  """Dense and sparse retrieval fused by `fuse_rankings`, itself a text searcher."""
  dense: TextSearcher
  sparse: TextSearcher
  alpha: float = 1.0
  depth: int = 1000  # k': blocks taken from each list before fusing
  normalization: Normalization = "minmax"

  def __post_init__(self):
    if self.dense.num_rows != self.sparse.num_rows:
      raise ValueError(f"the dense index has {self.dense.num_rows} blocks, the sparse one "
                       f"{self.sparse.num_rows}: they must index the same block store")

  @property
  def num_rows(self) -> int:
    return self.dense.num_rows

  def search_texts(self, texts: Sequence[str], k: int) -> SearchResult:
    check_k(k, self.num_rows)
    depth = min(max(self.depth, k), self.num_rows)
    return fuse_rankings(self.dense.search_texts(texts, depth),
                         self.sparse.search_texts(texts, depth), k, alpha=self.alpha,
                         normalization=self.normalization)

"""The one protocol every retrieval backend implements (exact, ScaNN, and later BM25 and fusion)."""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np


class SearchResult(NamedTuple):
  ids: np.ndarray  # [num_queries, k] int64 block indices, best first
  scores: np.ndarray  # [num_queries, k] float32 scores (inner products for dense searchers)


class Searcher(Protocol):
  """Finds the k best blocks for each query."""

  @property
  def num_rows(self) -> int:
    """Blocks in the index."""

  def search(self, queries: np.ndarray, k: int) -> SearchResult:
    """[num_queries, dim] float32 queries -> the k best blocks of each, best first."""


def check_search_args(queries: np.ndarray, k: int, *, num_rows: int, dim: int) -> np.ndarray:
  """The queries as a float32 [num_queries, dim] array, or a ValueError that says what is wrong."""
  queries = np.asarray(queries, dtype=np.float32)
  if queries.ndim != 2 or queries.shape[1] != dim:
    raise ValueError(f"expected queries of shape [num_queries, {dim}], got {queries.shape}")
  if not 1 <= k <= num_rows:
    raise ValueError(f"k={k} must be between 1 and the {num_rows} rows of the index")
  return queries

"""The protocols every retrieval backend implements: `Searcher` over query embeddings (exact,
ScaNN), `MultiVectorSearcher` over sets of query vectors (exact MaxSim, PLAID) and
`TextSearcher` over query texts (BM25, fusion, a dense or multi-vector searcher with its query
encoder), so that evaluation and training treat every retriever alike."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

from orqa_realm.modeling.late_interaction import VectorSet


class SearchResult(NamedTuple):
  ids: np.ndarray  # [num_queries, k] int64 block indices, best first
  scores: np.ndarray  # [num_queries, k] float32 scores (inner products for dense searchers)


class Searcher(Protocol):
  """Finds the k best blocks for each query embedding."""

  @property
  def num_rows(self) -> int:
    """Blocks in the index."""

  def search(self, queries: np.ndarray, k: int) -> SearchResult:
    """[num_queries, dim] float32 queries -> the k best blocks of each, best first."""


class TextSearcher(Protocol):
  """Finds the k best blocks for each question or query text."""

  @property
  def num_rows(self) -> int:
    """Blocks in the index."""

  def search_texts(self, texts: Sequence[str], k: int) -> SearchResult:
    """The k best blocks of each text, best first."""


class MultiVectorSearcher(Protocol):
  """Finds the k best blocks for each query's set of vectors (exact MaxSim, PLAID)."""

  @property
  def num_rows(self) -> int:
    """Blocks in the index."""

  def search_sets(self, queries: VectorSet, k: int) -> SearchResult:
    """[num_queries, n, dim] query vectors with their [num_queries, n] mask -> the k best
    blocks of each, best first."""


@dataclasses.dataclass(frozen=True)
class EncodedTextSearcher:
  """A searcher behind the query encoder that encodes texts for it: dense embeddings for an
  exact or ScaNN index, sparse term weights for a sparse index (`index/sparse.py`), term lists
  for a DeepCT index (`index/deepct.py`)."""
  embed: Callable[[Sequence[str]], Any]  # texts -> what `searcher.search` takes
  searcher: Any  # a Searcher, or a sparse index

  @property
  def num_rows(self) -> int:
    return self.searcher.num_rows

  def search_texts(self, texts: Sequence[str], k: int) -> SearchResult:
    return self.searcher.search(self.embed(texts), k)


def check_k(k: int, num_rows: int) -> None:
  """A ValueError unless 1 <= k <= num_rows."""
  if not 1 <= k <= num_rows:
    raise ValueError(f"k={k} must be between 1 and the {num_rows} rows of the index")


def check_search_args(queries: np.ndarray, k: int, *, num_rows: int, dim: int) -> np.ndarray:
  """The queries as a float32 [num_queries, dim] array, or a ValueError that says what is wrong."""
  queries = np.asarray(queries, dtype=np.float32)
  if queries.ndim != 2 or queries.shape[1] != dim:
    raise ValueError(f"expected queries of shape [num_queries, {dim}], got {queries.shape}")
  check_k(k, num_rows)
  return queries


@dataclasses.dataclass(frozen=True)
class MultiVectorTextSearcher:
  """A multi-vector searcher behind the query encoder that turns texts into vector sets."""
  encode: Callable[[Sequence[str]], VectorSet]  # texts -> [num_texts, n, dim] vectors and mask
  searcher: MultiVectorSearcher

  @property
  def num_rows(self) -> int:
    return self.searcher.num_rows

  def search_texts(self, texts: Sequence[str], k: int) -> SearchResult:
    return self.searcher.search_sets(self.encode(texts), k)

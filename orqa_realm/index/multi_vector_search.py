"""Exact multi-vector search (ColBERT's MaxSim, ME-BERT's max, the poly-encoder's attention) on
the devices of a mesh.

A corpus is every block's vectors one after another (`TokenVectors`: ColBERT's flat token matrix
with its per-block lengths). For search on device the blocks are padded to the longest one and
split into one shard per device, as `ExactSearcher` splits rows; each device scans its shard
`chunk_size` blocks at a time against a batch of queries, keeping a running top-k, so memory
stays at [queries, chunk, query vectors, block vectors] similarities whatever the corpus size.
The shards' lists are then all-gathered and merged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from orqa_realm.core import parallel
from orqa_realm.index.exact import merge_top_k, next_power_of_two, shard_layout, shard_top_k
from orqa_realm.index.searcher import SearchResult, check_k
from orqa_realm.modeling.late_interaction import VectorSet


class TokenVectors(NamedTuple):
  """The vectors of a corpus, block after block."""
  vectors: np.ndarray  # [total vectors, dim]
  lengths: np.ndarray  # [num_blocks] int64: block i's vectors are the next lengths[i] rows

  @property
  def offsets(self) -> np.ndarray:
    """[num_blocks + 1] int64: block i's vectors are rows offsets[i]:offsets[i + 1]."""
    return np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

  def check(self) -> None:
    """A ValueError unless the lengths cover the vectors exactly."""
    if self.vectors.ndim != 2:
      raise ValueError(f"expected [total, dim] vectors, got shape {self.vectors.shape}")
    if self.lengths.ndim != 1 or (self.lengths < 0).any():
      raise ValueError("block lengths must be a vector of counts")
    if int(self.lengths.sum()) != len(self.vectors):
      raise ValueError(f"the block lengths sum to {int(self.lengths.sum())}, but there are "
                       f"{len(self.vectors)} vectors")

  def padded(self, num_rows: int | None = None, dtype=np.float32) -> VectorSet:
    """[num_rows, longest, dim] vectors and [num_rows, longest] mask, rows past the corpus
    empty (`num_rows` defaults to the corpus's)."""
    num_blocks = len(self.lengths)
    num_rows = num_blocks if num_rows is None else num_rows
    longest = max(int(self.lengths.max(initial=0)), 1)
    vectors = np.zeros((num_rows, longest, self.vectors.shape[1]), dtype)
    mask = np.zeros((num_rows, longest), np.int32)
    positions = np.arange(longest)[None, :] < self.lengths[:, None]  # [blocks, longest]
    vectors[:num_blocks][positions] = self.vectors
    mask[:num_blocks][positions] = 1
    return VectorSet(vectors, mask)


ScoreFn = Callable[[VectorSet, VectorSet], jax.Array]  # [q] x [n] sets -> [q, n] scores


class ExactMultiVectorSearcher:
  """Exact top-k of query vector sets over a corpus of block vector sets, by `score`.

  Args:
    corpus: every block's vectors.
    score: the retriever's score of query sets against block sets (`multi_vector.scores` with
      its config bound).
    mesh: the devices holding the shards (default: all devices).
    chunk_size: blocks scored at once per device.
    query_batch_size: most queries per device call; batches are padded to a power of two.
    dtype: how the corpus is held on device (scores accumulate in float32 either way).
  """

  def __init__(self, corpus: TokenVectors, score: ScoreFn, *, mesh: Mesh | None = None,
               chunk_size: int = 128, query_batch_size: int = 32, dtype=jnp.float32):
    corpus.check()
    if not len(corpus.lengths):
      raise ValueError("an empty corpus cannot be searched")
    self.mesh = parallel.data_mesh(mesh) if mesh is not None else parallel.make_mesh()
    self._num_rows = len(corpus.lengths)
    self.dim = corpus.vectors.shape[1]
    self.query_batch_size = query_batch_size
    self.chunk_size, rows_per_device = shard_layout(self._num_rows, self.mesh.size, chunk_size)
    padded = corpus.padded(rows_per_device * self.mesh.size, jnp.dtype(dtype))
    self._corpus = jax.device_put(padded, NamedSharding(self.mesh,
                                                        PartitionSpec(parallel.DATA_AXIS)))
    self._search_fn = jax.jit(self._make_search_fn(score, rows_per_device),
                              static_argnames="k")

  def _make_search_fn(self, score: ScoreFn, rows_per_shard: int):
    mesh, chunk_size, num_rows = self.mesh, self.chunk_size, self._num_rows

    def search(queries: VectorSet, corpus: VectorSet, k: int):
      shard_search = functools.partial(shard_top_k, k=min(k, rows_per_shard),
                                       chunk_size=chunk_size, num_rows=num_rows, score=score)
      shard_scores, shard_ids = jax.shard_map(
          shard_search, mesh=mesh,
          in_specs=(PartitionSpec(), PartitionSpec(parallel.DATA_AXIS)),
          out_specs=PartitionSpec(None, parallel.DATA_AXIS))(queries, corpus)
      return merge_top_k(shard_scores, shard_ids, k)

    return search

  @property
  def num_rows(self) -> int:
    return self._num_rows

  def search_sets(self, queries: VectorSet, k: int) -> SearchResult:
    """[num_queries, n, dim] query vectors ([num_queries, n] mask) -> the k best blocks of
    each, best first."""
    vectors = np.asarray(queries.vectors, np.float32)
    mask = np.asarray(queries.mask, np.int32)
    if vectors.ndim != 3 or vectors.shape[2] != self.dim or mask.shape != vectors.shape[:2]:
      raise ValueError(f"expected [num_queries, n, {self.dim}] query vectors with a "
                       f"[num_queries, n] mask, got {vectors.shape} and {mask.shape}")
    check_k(k, self._num_rows)
    replicated = parallel.replicated(self.mesh)
    ids, scores = [], []
    for start in range(0, len(vectors), self.query_batch_size):
      batch = slice(start, start + self.query_batch_size)
      size = len(vectors[batch])
      padded_size = min(next_power_of_two(max(size, 8)), self.query_batch_size)
      padded = VectorSet(np.zeros((padded_size, *vectors.shape[1:]), np.float32),
                         np.zeros((padded_size, vectors.shape[1]), np.int32))
      padded.vectors[:size], padded.mask[:size] = vectors[batch], mask[batch]
      batch_scores, batch_ids = jax.device_get(self._search_fn(
          jax.device_put(padded, replicated), self._corpus, k=k))
      scores.append(batch_scores[:size])
      ids.append(batch_ids[:size])
    return SearchResult(np.concatenate(ids).astype(np.int64), np.concatenate(scores))

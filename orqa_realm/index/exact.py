"""Exact maximum inner product search on the devices of a mesh.

The corpus is split into one shard per device (rows padded to equal shards). Each device scans its
shard in chunks, keeping a running top-k, so memory stays at [queries, chunk] scores whatever the
corpus size; the per-device top-k lists are then all-gathered and merged. At 13M x 128 float32
(6.8 GB) this is the exact baseline the ORQA/REALM papers' ScaNN indexes approximate.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from orqa_realm.core import parallel
from orqa_realm.index.searcher import SearchResult, check_search_args


def next_power_of_two(n: int) -> int:
  """The least power of two >= n (1 for n <= 1): batch sizes padded to it compile few shapes."""
  return 1 << max(n - 1, 0).bit_length()


def merge_top_k(scores: jax.Array, ids: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """The k best of candidate lists [..., n] (scores with their ids), best first.

  Among equal scores the earlier candidate wins, so merging lists in corpus order breaks ties
  towards the lower id, as a single `lax.top_k` over the whole corpus would.
  """
  best_scores, positions = lax.top_k(scores, k)
  return best_scores, jnp.take_along_axis(ids, positions, axis=-1)


# Rows a device scores at once: of 2048 to 32768, 8192 ran fastest at 500k x 128 (1,377-1,560
# queries/s against 1,312 at 32768; README "Benchmarks"), its [512, 8192] scores fitting in L3.
DEFAULT_CHUNK_SIZE = 8192

# Rows per window of `windowed_top_k`: of 32, 64 and 128 the fastest (32 x 32768 scores: 3.7 ms
# against 18.2 ms for `lax.top_k` over the whole chunk, k = 10, on the 2-core EPYC).
TOP_K_WINDOW = 32


def windowed_top_k(scores: jax.Array, k: int, window: int | None = TOP_K_WINDOW
                   ) -> tuple[jax.Array, jax.Array]:
  """`lax.top_k(scores, k)` of [B, n] scores, exactly, through the maxima of windows of `window`
  consecutive scores: [B, k] scores and positions, best first, ties to the lower position.

  A score among the k best lies in a window whose maximum is at least that score, and fewer
  than k windows can have a larger maximum: the k windows of largest maxima hold the k best.
  So one top-k runs over n / window maxima and another over the k * window scores of the chosen
  windows, instead of one over n (XLA's CPU top-k sorts each row). With `window` None, when n is
  not a multiple of `window`, or has fewer than 2k windows, it is `lax.top_k`.
  """
  batch, n = scores.shape
  if window is None or n % window or n // window < 2 * k:
    return lax.top_k(scores, k)
  windows = scores.reshape(batch, n // window, window)  # [B, windows, window]
  # In corpus order, so that a tie goes to the lower position as in one top-k over all.
  chosen = jnp.sort(lax.top_k(windows.max(axis=-1), k)[1], axis=-1)  # [B, k]
  candidates = jnp.take_along_axis(windows, chosen[..., None], axis=1)  # [B, k, window]
  best, within = lax.top_k(candidates.reshape(batch, k * window), k)  # [B, k]
  positions = (chosen[..., None] * window + jnp.arange(window)).reshape(batch, k * window)
  return best, jnp.take_along_axis(positions, within, axis=-1)


def shard_layout(num_rows: int, num_devices: int, chunk_size: int) -> tuple[int, int]:
  """(chunk size, rows per device) of a corpus split into equal device shards scanned in equal
  chunks: the chunk no larger than a shard, the shard padded to whole chunks."""
  rows_per_device = math.ceil(num_rows / num_devices)
  chunk_size = min(chunk_size, rows_per_device)
  return chunk_size, math.ceil(rows_per_device / chunk_size) * chunk_size


def dot_scores(queries: jax.Array, chunk: jax.Array) -> jax.Array:
  """[B, D] queries x [chunk, D] rows -> [B, chunk] float32 inner products."""
  return jnp.dot(queries, chunk.T, preferred_element_type=jnp.float32)


def shard_top_k(queries: Any, shard: Any, *, k: int, chunk_size: int, num_rows: int,
                score: Callable[[Any, Any], jax.Array] = dot_scores,
                top_k_window: int | None = TOP_K_WINDOW) -> tuple[jax.Array, jax.Array]:
  """Top k of one device's shard (inside `shard_map` over `parallel.DATA_AXIS`), scanned in
  chunks of `chunk_size` rows: `score(queries, chunk)` -> [B, chunk] for every chunk, merged
  into a running [B, k] list of scores and global row ids.

  `queries` and `shard` are pytrees (a [B, D] array and a [rows, D] array for dense search; sets
  of vectors for multi-vector search), every leaf of `shard` with the rows on its leading axis.
  Each chunk's top k is found by `windowed_top_k(..., top_k_window)`. k may exceed a chunk
  (then each chunk is merged whole into the running list) but not the shard; the searchers ask
  each shard for at most its own rows."""
  rows_per_shard = jax.tree.leaves(shard)[0].shape[0]
  first_row = lax.axis_index(parallel.DATA_AXIS) * rows_per_shard
  num_chunks = rows_per_shard // chunk_size
  chunks = jax.tree.map(lambda leaf: leaf.reshape(num_chunks, chunk_size, *leaf.shape[1:]),
                        shard)  # [chunks, chunk, ...]

  def scan_chunk(best, chunk_and_index):
    chunk, chunk_index = chunk_and_index
    scores = score(queries, chunk)  # [B, chunk]
    ids = first_row + chunk_index * chunk_size + jnp.arange(chunk_size)  # [chunk]
    # Padding rows (past the corpus) must never be chosen.
    scores = jnp.where(ids < num_rows, scores, -jnp.inf)
    # The chunk's own k best first (k may exceed a chunk: then all of it), merged after the
    # running list, which holds lower ids.
    chunk_scores, positions = windowed_top_k(scores, min(k, chunk_size),
                                             top_k_window)  # [B, min(k, chunk)]
    merged = merge_top_k(jnp.concatenate([best[0], chunk_scores], axis=1),
                         jnp.concatenate([best[1], ids[positions]], axis=1), k)
    return merged, None

  num_queries = jax.tree.leaves(queries)[0].shape[0]
  # The running top-k differs per device ("varying" over the mesh axis) from the first chunk on.
  initial = lax.pcast((jnp.full((num_queries, k), -jnp.inf, jnp.float32),
                       jnp.full((num_queries, k), num_rows, jnp.int32)),
                      (parallel.DATA_AXIS,), to="varying")
  best, _ = lax.scan(scan_chunk, initial, (chunks, jnp.arange(num_chunks)))
  return best


def _shard_rows(ids: jax.Array, shard: jax.Array) -> jax.Array:
  """The rows `ids` [...] that lie in this device's shard, zeros for the others: [..., D]."""
  rows_per_shard = shard.shape[0]
  local = ids - lax.axis_index(parallel.DATA_AXIS) * rows_per_shard
  inside = (local >= 0) & (local < rows_per_shard)
  rows = jnp.take(shard, jnp.clip(local, 0, rows_per_shard - 1), axis=0)
  return jnp.where(inside[..., None], rows, jnp.zeros((), shard.dtype))


class ExactSearcher:
  """Exact top-k by inner product, the corpus sharded over the devices of `mesh`.

  Args:
    embeddings: [num_rows, dim] block embeddings.
    mesh: the mesh whose devices hold the shards, one per device whatever its shape (default:
      all devices).
    chunk_size: rows scored at once per device; bounds memory at [query_batch, chunk_size].
    query_batch_size: most queries per device call; query batches are padded to a power of two
      so that few shapes are compiled.
    dtype: how the corpus is held on device (bfloat16 halves memory; scores accumulate in
      float32 either way).
    top_k_window: scores per window of each chunk's exact top-k (`windowed_top_k`); None for
      one `lax.top_k` over the chunk.
  """

  def __init__(self, embeddings: np.ndarray, *, mesh: Mesh | None = None,
               chunk_size: int = DEFAULT_CHUNK_SIZE, query_batch_size: int = 512,
               dtype=jnp.float32,
               top_k_window: int | None = TOP_K_WINDOW):
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or not len(embeddings):
      raise ValueError(f"expected [num_rows, dim] embeddings, got shape {embeddings.shape}")
    self.mesh = parallel.data_mesh(mesh) if mesh is not None else parallel.make_mesh()
    self._num_rows, self.dim = embeddings.shape
    self.dtype = jnp.dtype(dtype)
    self.query_batch_size = query_batch_size
    self.top_k_window = top_k_window
    self.chunk_size, rows_per_device = shard_layout(self._num_rows, self.mesh.size, chunk_size)
    padded = np.zeros((rows_per_device * self.mesh.size, self.dim), self.dtype)
    padded[:self._num_rows] = embeddings
    self._corpus = jax.device_put(padded, NamedSharding(self.mesh, PartitionSpec(parallel.DATA_AXIS)))
    self._replicated = parallel.replicated(self.mesh)
    # Built per searcher (not a jitted method with a static `self`), so that the compilation
    # cache does not keep a replaced index's corpus alive.
    self._search_fn = jax.jit(self._make_search_fn(), static_argnames="k")
    self._rows_fn = self._make_rows_fn()

  def _make_search_fn(self):
    mesh, chunk_size, num_rows, dtype = self.mesh, self.chunk_size, self._num_rows, self.dtype
    top_k_window = self.top_k_window
    rows_per_shard = self._corpus.shape[0] // mesh.size

    def search(queries: jax.Array, corpus: jax.Array, k: int):
      # Each shard offers at most its own rows; together they hold all num_rows >= k rows.
      shard_search = functools.partial(shard_top_k, k=min(k, rows_per_shard),
                                       chunk_size=chunk_size, num_rows=num_rows,
                                       top_k_window=top_k_window)
      # [B, devices * k]: the shards' lists side by side in corpus order (XLA all-gathers them).
      shard_scores, shard_ids = jax.shard_map(
          shard_search, mesh=mesh,
          in_specs=(PartitionSpec(), PartitionSpec(parallel.DATA_AXIS)),
          out_specs=PartitionSpec(None, parallel.DATA_AXIS))(queries.astype(dtype), corpus)
      return merge_top_k(shard_scores, shard_ids, k)

    return search

  def _make_rows_fn(self):
    # Each device gathers the rows it holds and the sum over devices assembles them, so the
    # corpus is never gathered whole onto one device.
    gather = jax.shard_map(
        lambda ids, shard: lax.psum(_shard_rows(ids, shard), parallel.DATA_AXIS), mesh=self.mesh,
        in_specs=(PartitionSpec(), PartitionSpec(parallel.DATA_AXIS)), out_specs=PartitionSpec())
    return jax.jit(lambda ids, corpus: gather(ids, corpus).astype(jnp.float32))

  @property
  def num_rows(self) -> int:
    return self._num_rows

  def search_on_device(self, queries: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Top k for [B, dim] queries already on the devices (e.g. inside a training step's data
    pipeline): (scores, ids), each [B, k], replicated over the mesh."""
    return self._search_fn(jax.device_put(queries, self._replicated), self._corpus, k=k)

  def rows_on_device(self, ids: jax.Array) -> jax.Array:
    """The embeddings of rows `ids` (int, any shape [...], on the devices or not) as
    [..., dim] float32, replicated over the mesh: e.g. the retrieved blocks' embeddings, from
    which a training step recomputes retrieval scores with gradients."""
    return self._rows_fn(jax.device_put(ids, self._replicated), self._corpus)

  def search(self, queries: np.ndarray, k: int) -> SearchResult:
    queries = check_search_args(queries, k, num_rows=self._num_rows, dim=self.dim)
    ids, scores = [], []
    for start in range(0, len(queries), self.query_batch_size):
      batch = queries[start:start + self.query_batch_size]
      padded_size = min(next_power_of_two(max(len(batch), 8)), self.query_batch_size)
      padded = np.zeros((padded_size, self.dim), np.float32)
      padded[:len(batch)] = batch
      batch_scores, batch_ids = jax.device_get(self.search_on_device(padded, k))
      scores.append(batch_scores[:len(batch)])
      ids.append(batch_ids[:len(batch)])
    return SearchResult(np.concatenate(ids).astype(np.int64), np.concatenate(scores))

"""Scoring (query, block) pairs with a cross-encoder's parameters: reranking a first-stage
retriever's candidates (`evaluate --rerank_workdir`), a cross-encoder task's evaluation, and
teacher scores for distillation.

The pairs of a call are sorted by input length and cut into batches of `batch_size` (a
multiple of the mesh size, split over it), each padded to its longest input rounded up to 64
wordpieces: few compiled shapes, little padding. The last batch is topped up by repeating its
pairs, whose extra scores are dropped.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from orqa_realm.core import parallel
from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.pair_inputs import pack_pairs, pair_lengths
from orqa_realm.data.reader_inputs import LENGTH_MULTIPLE
from orqa_realm.data.tokenization import TokenBatch, Tokenizer
from orqa_realm.encode import runs
from orqa_realm.encode.embedding import length_batches
from orqa_realm.modeling.cross_encoder import CrossEncoder, CrossEncoderConfig


@dataclasses.dataclass(frozen=True)
class RerankSettings:
  """Which cross-encoder reranks a first-stage ranking, how deep, and how it is run."""
  workdir: str = setting(
      "", "A cross-encoder run (--task=cross_encoder) that reranks the first stage's top "
      "--rerank_depth blocks of each query; empty: no reranking.", flag="rerank_workdir")
  checkpoint_step: int = setting(-1, "Checkpoint of --rerank_workdir; -1: the newest.",
                                 flag="rerank_checkpoint_step")
  depth: int = setting(100, "First-stage blocks per query the cross-encoder reorders.",
                       flag="rerank_depth")
  first_stage_weight: float = setting(
      0.0, "Weight of the first stage's score in the reranked order: each query's cross-encoder "
      "and first-stage scores are z-normalised and summed, the first stage's times this; 0: "
      "the cross-encoder's order alone.", flag="rerank_first_stage_weight")
  batch_size: int = setting(64, "(query, block) pairs per cross-encoder call (over all "
                            "devices).", flag="rerank_batch_size")
  dtype: str = setting("float32", "Matmul dtype of the cross-encoder (float32 accumulation).",
                       flag="rerank_dtype")

  def __post_init__(self):
    if self.first_stage_weight < 0:
      raise InputError(f"{self.first_stage_weight}: a negative weight would reverse the first "
                       "stage's ranking", field="rerank_first_stage_weight")

  @property
  def step(self) -> int | None:
    return None if self.checkpoint_step < 0 else self.checkpoint_step


@functools.lru_cache(maxsize=8)
def make_pair_scorer(config: CrossEncoderConfig, dtype, mesh):
  """Jitted (params, TokenBatch [batch, length]) -> [batch] float32 scores, the batch split over
  `mesh` and the result replicated; cached so that repeated calls reuse compiled shapes."""
  model = CrossEncoder(config, dtype)

  def score(params, pairs: TokenBatch) -> jax.Array:
    return model.apply({"params": params}, pairs)

  return jax.jit(score, in_shardings=(None, parallel.batch_sharding(mesh)),
                 out_shardings=parallel.replicated(mesh))


def score_pairs(params: Any, config: CrossEncoderConfig, store: BlockStore,
                queries: Sequence[Sequence[int]], block_ids: np.ndarray, *, batch_size: int = 64,
                dtype=jnp.float32, mesh=None, show_progress: bool = False) -> np.ndarray:
  """[queries, candidates] float32 cross-encoder scores of each query (its wordpieces, no
  special tokens) with each of its candidate blocks (`block_ids` [queries, candidates])."""
  mesh = mesh if mesh is not None else parallel.make_mesh()
  batch_size = math.ceil(batch_size / mesh.size) * mesh.size
  num_queries, num_candidates = block_ids.shape
  pair_queries = [queries[q] for q in range(num_queries) for _ in range(num_candidates)]
  pair_blocks = np.asarray(block_ids).ravel()
  lengths = pair_lengths(store, pair_queries, pair_blocks, max_length=config.max_length,
                         query_length=config.query_length)
  score = make_pair_scorer(config, dtype, mesh)
  params = jax.device_put(params, parallel.replicated(mesh))
  scores = np.empty(len(pair_blocks), np.float32)
  progress = tqdm.tqdm(total=len(pair_blocks), unit="pair", disable=not show_progress)
  for batch in length_batches(lengths, batch_size=batch_size, max_length=config.max_length,
                              multiple=LENGTH_MULTIPLE):
    rows = np.resize(batch.blocks, batch_size)  # topped up with copies, dropped below
    inputs = pack_pairs(store, [pair_queries[row] for row in rows], pair_blocks[rows],
                        length=batch.length, query_length=config.query_length)
    result = np.asarray(jax.device_get(score(params, parallel.to_global(inputs, mesh))))
    scores[batch.blocks] = result[:len(batch.blocks)]
    progress.update(len(batch.blocks))
  progress.close()
  return scores.reshape(num_queries, num_candidates)


class CrossEncoderReranker:
  """A trained cross-encoder scoring query texts with their candidate blocks (`index.rerank`
  reorders by the scores), counting the pairs it scored and the time it took (the rerank
  cost)."""

  def __init__(self, run: runs.CrossEncoderRun, store: BlockStore, tokenizer: Tokenizer,
               settings: RerankSettings, mesh, show_progress: bool = False):
    runs.check_tokenizer(run, tokenizer.fingerprint, "the block store")
    self.run, self.store, self.tokenizer = run, store, tokenizer
    self.settings, self.mesh, self.show_progress = settings, mesh, show_progress
    self.num_pairs, self.seconds = 0, 0.0

  def __call__(self, texts: Sequence[str], block_ids: np.ndarray) -> np.ndarray:
    start = time.perf_counter()
    scores = score_pairs(self.run.params, self.run.config, self.store,
                         self.tokenizer.tokenize(list(texts)), block_ids,
                         batch_size=self.settings.batch_size,
                         dtype=jnp.dtype(self.settings.dtype), mesh=self.mesh,
                         show_progress=self.show_progress)
    self.num_pairs += block_ids.size
    self.seconds += time.perf_counter() - start
    return scores

  def cost(self) -> dict[str, Any]:
    """What reranking took: pairs scored, seconds, pairs per second."""
    return dict(pairs=self.num_pairs, seconds=round(self.seconds, 2),
                pairs_per_second=round(self.num_pairs / max(self.seconds, 1e-9), 2))

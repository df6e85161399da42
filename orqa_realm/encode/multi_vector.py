"""Encoding a block store or queries with a multi-vector retriever's parameters.

Blocks are batched by length as dense embedding is (`embedding.length_batches`), split over all
devices, and only the vectors their mask keeps are stored (ColBERT drops padding and
punctuation): a corpus is `TokenVectors`, block after block in store order.
"""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from orqa_realm.core import parallel
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.multi_vector_inputs import (MarkerIds, VectorInputs, block_input_lengths,
                                                 block_inputs, query_inputs)
from orqa_realm.data.tokenization import Tokenizer
from orqa_realm.encode.embedding import length_batches
from orqa_realm.index.exact import next_power_of_two
from orqa_realm.index.multi_vector_search import TokenVectors
from orqa_realm.modeling.multi_vector import (ColBERTConfig, MultiVectorConfig,
                                              MultiVectorEncoder, VectorSet)


@functools.lru_cache(maxsize=8)
def make_encoder(config: MultiVectorConfig, dtype, mesh, side: str):
  """Jitted (params, VectorInputs [batch, length]) -> VectorSet of one side ("queries" or
  "blocks"), the batch split over `mesh` and the result replicated. Cached, so that repeated
  encodings (an evaluation every N training steps) reuse the compiled shapes."""
  model = MultiVectorEncoder(config, dtype)
  method = MultiVectorEncoder.encode_queries if side == "queries" else (
      MultiVectorEncoder.encode_blocks)

  def encode(params, inputs: VectorInputs) -> VectorSet:
    return model.apply({"params": params}, inputs, method=method)

  return jax.jit(encode, in_shardings=(None, parallel.batch_sharding(mesh)),
                 out_shardings=parallel.replicated(mesh))


def block_batch_inputs(store: BlockStore, blocks: Sequence[int], config: MultiVectorConfig,
                       ids: MarkerIds, length: int) -> VectorInputs:
  """[len(blocks), length] inputs of store blocks as `config` reads them."""
  return block_inputs(store, blocks, ids, length=length, block_format=config.block_format,
                      markers=config.markers,
                      skip_punctuation=isinstance(config, ColBERTConfig) and config.skip_punctuation)


def query_batch_inputs(tokenizer: Tokenizer, queries: Sequence[Sequence[int]],
                       config: MultiVectorConfig, ids: MarkerIds) -> VectorInputs:
  """[len(queries), query_length] inputs of query wordpieces as `config` reads them."""
  return query_inputs(tokenizer, queries, ids, length=config.query_length, markers=config.markers,
                      augment=isinstance(config, ColBERTConfig) and config.query_augmentation)


def encode_blocks(store: BlockStore, tokenizer: Tokenizer, params: Any,
                  config: MultiVectorConfig, *, batch_size: int = 64, dtype=jnp.float32,
                  mesh=None, show_progress: bool = False) -> TokenVectors:
  """Every block's kept vectors ([total, dim] float32), in store order."""
  mesh = mesh if mesh is not None else parallel.make_mesh()
  batch_size = math.ceil(batch_size / mesh.size) * mesh.size
  ids = MarkerIds.of(tokenizer)
  encode = make_encoder(config, dtype, mesh, "blocks")
  params = jax.device_put(params, parallel.replicated(mesh))
  per_block: list[np.ndarray | None] = [None] * len(store)
  progress = tqdm.tqdm(total=len(store), unit="block", disable=not show_progress)
  # One batch in flight while the next is packed on the host: dispatch is asynchronous.
  in_flight: collections.deque = collections.deque()

  def collect():
    blocks, result = in_flight.popleft()
    vectors, mask = (np.asarray(array) for array in jax.device_get(result))
    for row, block in enumerate(blocks):
      per_block[block] = vectors[row][mask[row] != 0]
    progress.update(len(blocks))

  lengths = block_input_lengths(store, config.block_format, config.markers)
  for batch in length_batches(lengths, batch_size=batch_size, max_length=config.block_length):
    # The last batch is topped up with copies of its first block, whose results are dropped.
    padded = np.resize(batch.blocks, batch_size)
    inputs = block_batch_inputs(store, padded, config, ids, batch.length)
    in_flight.append((batch.blocks, encode(params, parallel.to_global(inputs, mesh))))
    if len(in_flight) > 1:
      collect()
  while in_flight:
    collect()
  progress.close()
  return TokenVectors(np.concatenate(per_block).astype(np.float32),
                      np.array([len(vectors) for vectors in per_block], np.int64))


def encode_queries(questions: Sequence[str], tokenizer: Tokenizer, params: Any,
                   config: MultiVectorConfig, *, batch_size: int = 256, dtype=jnp.float32,
                   mesh=None) -> VectorSet:
  """[num_questions, n, dim] float32 query vectors and their [num_questions, n] mask."""
  mesh = mesh if mesh is not None else parallel.make_mesh()
  fitted = next_power_of_two(max(len(questions), 1))
  batch_size = math.ceil(min(batch_size, fitted) / mesh.size) * mesh.size
  ids = MarkerIds.of(tokenizer)
  encode = make_encoder(config, dtype, mesh, "queries")
  params = jax.device_put(params, parallel.replicated(mesh))
  question_ids = tokenizer.tokenize(list(questions))
  vectors, masks = [], []
  for start in range(0, len(question_ids), batch_size):
    chunk = question_ids[start:start + batch_size]
    # The last batch is padded with empty questions, whose results are dropped.
    inputs = query_batch_inputs(tokenizer, chunk + [[]] * (batch_size - len(chunk)), config, ids)
    result = jax.device_get(encode(params, parallel.to_global(inputs, mesh)))
    vectors.append(np.asarray(result.vectors)[:len(chunk)])
    masks.append(np.asarray(result.mask)[:len(chunk)])
  return VectorSet(np.concatenate(vectors), np.concatenate(masks))

"""Block embeddings of a block store, published as a new version of an index.

From a training run's checkpoint (the model configuration comes from the run):

    python -m orqa_realm.embed --block_store=runs/blocks/squad_demo --workdir=runs/ict_demo \\
        --index_dir=runs/index/squad_demo [--checkpoint_step=N] [--index_backend=scann]

or straight from Hugging Face weights (no projection: a fresh one would be random):

    python -m orqa_realm.embed --block_store=runs/blocks/scifact --bert=minilm --pooling=mean \\
        --projection_size=0 --block_format=joined --block_length=256 --index_dir=runs/index/scifact

Blocks are sorted by length and batched so that each batch is padded only to its own longest
block (rounded up to a multiple of 32, which bounds the number of compiled shapes); batches are
split over all devices.
"""

from __future__ import annotations

import collections
import functools
import json
import math
import sys
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import app

from orqa_realm.core import checkpoints, parallel
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.tokenization import TokenBatch, Tokenizer
from orqa_realm.core.errors import InputError
from orqa_realm.index import index_flags
from orqa_realm.index.storage import IndexRoot, IndexVersion
from orqa_realm.modeling import retriever
from orqa_realm.modeling.pretrained import resolve_model_dir
from orqa_realm.tasks import retriever_flags

LENGTH_MULTIPLE = 32


class LengthBatch(NamedTuple):
  blocks: np.ndarray  # [<= batch_size] block indices
  length: int  # the padded input length of this batch


def length_batches(input_lengths: np.ndarray, *, batch_size: int, max_length: int,
                   multiple: int = LENGTH_MULTIPLE) -> list[LengthBatch]:
  """Blocks ordered by input length and cut into batches, each padded to a multiple of
  `multiple` above its longest input (never beyond `max_length`)."""
  order = np.argsort(input_lengths, kind="stable")
  batches = []
  for start in range(0, len(order), batch_size):
    blocks = order[start:start + batch_size]
    longest = min(int(input_lengths[blocks].max()), max_length)
    batches.append(LengthBatch(blocks, min(math.ceil(longest / multiple) * multiple, max_length)))
  return batches


def block_tower_params(params: Any, config: retriever.RetrieverConfig) -> dict[str, Any]:
  """The part of the retriever params the block tower uses."""
  tower = "encoder" if config.share_encoders else "block_encoder"
  return {tower: params[tower]}


@functools.lru_cache(maxsize=8)
def make_tower_embedder(config: retriever.RetrieverConfig, dtype, mesh, method):
  """Jitted (params, TokenBatch [batch, length]) -> [batch, embedding_size] float32 for one
  tower (`method`: `DualEncoder.embed_blocks` or `.embed_queries`), the batch split over `mesh`
  and the result replicated.

  Cached, so that repeated embeddings (an evaluation every N training steps) reuse the compiled
  shapes; params are arguments, so no weights are kept alive by the cache."""
  model = retriever.DualEncoder(config, dtype)
  replicated = parallel.replicated(mesh)

  def embed(params, inputs: TokenBatch) -> jax.Array:
    return model.apply({"params": params}, inputs, method=method)

  return jax.jit(embed, in_shardings=(replicated, parallel.batch_sharding(mesh)),
                 out_shardings=replicated)


def padded_block_batches(store: BlockStore, config: retriever.RetrieverConfig, *,
                         block_length: int, batch_size: int
                         ) -> Iterator[tuple[np.ndarray, TokenBatch]]:
  """(block indices [<= batch_size], inputs [batch_size, length]) for each `length_batches` batch
  of the store. The last batch is topped up with copies of its first block, whose results the
  caller drops, so that every batch has one shape per length."""
  for batch in length_batches(store.input_lengths(config.block_format), batch_size=batch_size,
                              max_length=block_length):
    padded = np.resize(batch.blocks, batch_size) if len(batch.blocks) < batch_size else batch.blocks
    yield batch.blocks, store.encode(padded, batch.length, config.block_format)


def embed_blocks(store: BlockStore, params: Any, config: retriever.RetrieverConfig, *,
                 block_length: int, batch_size: int = 128, dtype=jnp.bfloat16, mesh=None,
                 show_progress: bool = False) -> np.ndarray:
  """[num_blocks, embedding_size] float32 embeddings of every block of `store`.

  `params` may be the whole retriever's or only the block tower's.
  """
  mesh = mesh if mesh is not None else parallel.make_mesh()
  batch_size = math.ceil(batch_size / mesh.size) * mesh.size
  embed = make_tower_embedder(config, dtype, mesh, retriever.DualEncoder.embed_blocks)
  params = jax.device_put(block_tower_params(params, config), parallel.replicated(mesh))
  embeddings = np.empty((len(store), config.embedding_size), np.float32)
  progress = tqdm.tqdm(total=len(store), unit="block", disable=not show_progress)
  # One batch in flight while the next is packed on the host: dispatch is asynchronous.
  in_flight: collections.deque = collections.deque()

  def collect():
    blocks, result = in_flight.popleft()
    embeddings[blocks] = np.asarray(jax.device_get(result))[:len(blocks)]
    progress.update(len(blocks))

  for blocks, inputs in padded_block_batches(store, config, block_length=block_length,
                                             batch_size=batch_size):
    in_flight.append((blocks, embed(params, parallel.to_global(inputs, mesh))))
    if len(in_flight) > 1:
      collect()
  while in_flight:
    collect()
  progress.close()
  return embeddings


def restore_retriever(reader: checkpoints.CheckpointReader, step: int,
                      config: retriever.RetrieverConfig, mesh, *,
                      block_tower_only: bool = False) -> dict[str, Any]:
  """The retriever params (or only the block tower's) of checkpoint `step`, replicated over
  `mesh`; the optimizer state is not read."""
  shapes = jax.eval_shape(lambda: retriever.init_params(config, jax.random.key(0)))
  if block_tower_only:
    shapes = block_tower_params(shapes, config)
  return reader.restore_params(
      step, checkpoints.abstract_with_sharding(shapes, parallel.replicated(mesh)))


def restore_latest_retriever(workdir: str, config: retriever.RetrieverConfig, mesh
                             ) -> dict[str, Any]:
  """The retriever params of the latest checkpoint of the run in `workdir` (a warm start,
  `--retriever_workdir`), replicated over `mesh`; an error if it has none."""
  reader = checkpoints.CheckpointReader(checkpoints.checkpoint_dir(workdir))
  step = reader.latest_step()
  if step is None:
    raise InputError("the run has no checkpoint to start from", path=reader.directory,
                     field="retriever_workdir")
  params = restore_retriever(reader, step, config, mesh)
  reader.close()
  return params


def embed_and_publish(store: BlockStore, params: Any, config: retriever.RetrieverConfig,
                      index_root: IndexRoot, *, checkpoint_step: int | None, block_length: int,
                      batch_size: int, dtype, mesh=None, storage_dtype: str = "float32",
                      scann_config=None, metadata: dict[str, Any] | None = None,
                      show_progress: bool = False) -> IndexVersion:
  """Embeds the store and publishes the embeddings (and a ScaNN index) as a new version."""
  started = time.time()
  embeddings = embed_blocks(store, params, config, block_length=block_length,
                            batch_size=batch_size, dtype=dtype, mesh=mesh,
                            show_progress=show_progress)
  embed_seconds = time.time() - started
  return index_root.publish(
      embeddings, store_fingerprint=store.fingerprint, checkpoint_step=checkpoint_step,
      storage_dtype=storage_dtype, scann_config=scann_config,
      metadata=dict(metadata or {}, retriever=config.to_dict(), block_length=block_length,
                    embed_dtype=jnp.dtype(dtype).name, embed_seconds=round(embed_seconds, 2),
                    blocks_per_second=round(len(store) / embed_seconds, 1)))


def embed_query_tokens(params: Any, queries: TokenBatch, config: retriever.RetrieverConfig, *,
                       dtype, mesh) -> np.ndarray:
  """[batch, embedding_size] float32 query-tower embeddings of packed queries, on the host
  (e.g. to search a host-side index before a training step)."""
  embed = make_tower_embedder(config, dtype, mesh, retriever.DualEncoder.embed_queries)
  return np.asarray(parallel.fetch_replicated(embed(params, parallel.to_global(queries, mesh))))


def embed_queries(questions: list[str], params: Any, config: retriever.RetrieverConfig,
                  tokenizer: Tokenizer, *, query_length: int, batch_size: int = 256,
                  dtype=jnp.float32, mesh=None) -> np.ndarray:
  """[num_questions, embedding_size] float32 query-tower embeddings of `questions`."""
  mesh = mesh if mesh is not None else parallel.make_mesh()
  batch_size = math.ceil(min(batch_size, max(len(questions), 1)) / mesh.size) * mesh.size
  embed = make_tower_embedder(config, dtype, mesh, retriever.DualEncoder.embed_queries)
  params = jax.device_put(params, parallel.replicated(mesh))
  embeddings = np.empty((len(questions), config.embedding_size), np.float32)
  for start in range(0, len(questions), batch_size):
    chunk = questions[start:start + batch_size]
    # The last batch is padded with empty questions, whose results are dropped.
    inputs = tokenizer.encode_queries(chunk + [""] * (batch_size - len(chunk)), query_length)
    result = jax.device_get(embed(params, parallel.to_global(inputs, mesh)))
    embeddings[start:start + len(chunk)] = result[:len(chunk)]
  return embeddings


def retriever_from_flags(mesh, *, block_tower_only: bool
                         ) -> tuple[retriever.RetrieverConfig, Any, int | None]:
  """(config, params, checkpoint step) from --workdir's checkpoint, or from --bert's weights
  (step None). Only the block tower's params when `block_tower_only`."""
  workdir = checkpoints.WORKDIR.value
  if workdir:
    config = retriever.RetrieverConfig.from_dict(checkpoints.read_model_config(workdir))
    reader = checkpoints.CheckpointReader(checkpoints.checkpoint_dir(workdir))
    step = checkpoints.CHECKPOINT_STEP.value
    step = reader.latest_step() if step < 0 else step
    if step is None:
      raise InputError("the run has no checkpoint yet", path=reader.directory)
    params = restore_retriever(reader, step, config, mesh, block_tower_only=block_tower_only)
    reader.close()
    return config, params, step
  config = retriever_flags.retriever_config()
  if config.projection_size:
    raise InputError("without --workdir the model is --bert's weights, which have no projection; "
                     "pass --projection_size=0 (a fresh projection would be random)",
                     field="projection_size")
  params = retriever.init_params(config, jax.random.key(0), retriever_flags.pretrained_bert_params())
  return config, block_tower_params(params, config) if block_tower_only else params, None


def main(argv):
  del argv
  if not index_flags.INDEX_DIR.value or not retriever_flags.BLOCK_STORE.value:
    sys.exit("error: --block_store and --index_dir are required")
  mesh = parallel.make_mesh()
  try:
    store = BlockStore(retriever_flags.BLOCK_STORE.value)
    store.check_tokenizer(Tokenizer(resolve_model_dir(retriever_flags.BERT.value)))
    config, params, step = retriever_from_flags(mesh, block_tower_only=True)
    version = embed_and_publish(
        store, params, config,
        IndexRoot(index_flags.INDEX_DIR.value, keep=index_flags.INDEX_KEEP_VERSIONS.value),
        checkpoint_step=step, block_length=retriever_flags.BLOCK_LENGTH.value,
        batch_size=index_flags.EMBED_BATCH_SIZE.value, dtype=index_flags.embed_dtype(),
        mesh=mesh, storage_dtype=index_flags.INDEX_STORAGE_DTYPE.value,
        scann_config=index_flags.scann_config(), show_progress=sys.stderr.isatty())
  except InputError as e:
    sys.exit(f"error: {e}")
  summary = dict(version=version.version, checkpoint_step=version.checkpoint_step,
                 num_blocks=version.num_rows, embedding_size=version.embedding_size,
                 blocks_per_second=version.metadata["blocks_per_second"])
  print(f"published {version.directory}: {json.dumps(summary)}")


if __name__ == "__main__":
  app.run(main)

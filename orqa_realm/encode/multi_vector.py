"""Encoding a block store or queries with a multi-vector retriever's parameters, publishing the
block vectors as a multi-vector index version, and searching it with the run's query encoder.

Blocks are batched by length as dense embedding is (`embedding.length_batches`), split over all
devices, and only the vectors their mask keeps are stored (ColBERT drops padding and
punctuation): a corpus is `TokenVectors`, block after block in store order. A version records
the retriever's settings, the tokenizer and the run and checkpoint it was embedded from, so that
only that query encoder searches it.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import time
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from orqa_realm.core import parallel
from orqa_realm.core.config import differences, nested, setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.multi_vector_inputs import (MarkerIds, VectorInputs, block_input_lengths,
                                                 block_inputs, query_inputs)
from orqa_realm.data.tokenization import Tokenizer
from orqa_realm.encode import embedding, runs
from orqa_realm.encode.embedding import length_batches
from orqa_realm.index import multi_vector_index, storage
from orqa_realm.index.exact import next_power_of_two
from orqa_realm.index.multi_vector_index import MultiVectorStorage
from orqa_realm.index.multi_vector_search import ExactMultiVectorSearcher, TokenVectors
from orqa_realm.index.plaid import PLAIDSearcher, PLAIDSettings
from orqa_realm.index.searcher import MultiVectorTextSearcher
from orqa_realm.index.storage import IndexRoot, IndexVersion
from orqa_realm.modeling import multi_vector
from orqa_realm.modeling.multi_vector import (ColBERTConfig, MultiVectorConfig,
                                              MultiVectorEncoder, PolyEncoderConfig, VectorSet)


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
  skip = isinstance(config, ColBERTConfig) and config.skip_punctuation
  return block_inputs(store, blocks, ids, length=length, block_format=config.block_format,
                      markers=config.markers, skip_punctuation=skip)


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


@dataclasses.dataclass(frozen=True)
class MultiVectorIndexConfig:
  """Where and how a multi-vector retriever's block vectors are published."""
  index_dir: str = setting(
      "", "Index root directory: versions published by `python -m orqa_realm.embed`, the newest "
      "named by its LATEST file.")
  keep_versions: int = setting(3, "Index versions kept on disk.", flag="index_keep_versions")
  storage: MultiVectorStorage = nested(MultiVectorStorage())
  embedding: embedding.EmbedSettings = nested(embedding.EmbedSettings())

  def root(self) -> IndexRoot:
    if not self.index_dir:
      raise InputError("no index directory given", field="index_dir")
    return IndexRoot(self.index_dir, keep=self.keep_versions)


# What the block vectors depend on: the settings a query encoder may not change against an index.
BLOCK_FIELDS = ("kind", "bert", "dim", "block_length", "block_format", "markers", "normalize",
                "skip_punctuation", "num_vectors")


def block_settings(config: dict[str, Any]) -> dict[str, Any]:
  """The `BLOCK_FIELDS` of a retriever's saved settings (those its kind has)."""
  return {name: config[name] for name in BLOCK_FIELDS if name in config}


def indexed_retriever(version: IndexVersion) -> MultiVectorConfig:
  """The multi-vector retriever whose block encoder embedded `version`."""
  version.check_kind(storage.MULTI_VECTOR)
  return multi_vector.MultiVectorConfig.from_dict(version.metadata["retriever"])


def check_publishable(root: IndexRoot, config: MultiVectorConfig, store: BlockStore,
                      settings: MultiVectorStorage) -> None:
  """Refuses to publish `store`'s vectors by `config`, stored as `settings` say, into a root
  whose newest version is dense, of another store, or of another retriever's blocks (its readers
  could not search it), or a compression that cannot pack its vectors; checks the root is
  writable. All before any encoding."""
  settings.check_fits(config.dim)
  latest = storage.version_to_continue(root, storage.MULTI_VECTOR)
  if latest is None:
    return
  if latest.store_fingerprint != store.fingerprint:
    raise InputError(f"the index root holds vectors of another block store (fingerprint "
                     f"{latest.store_fingerprint}, --block_store {store.directory} is "
                     f"{store.fingerprint}): use another --index_dir", path=root.root,
                     field="index_dir")
  changed = differences(block_settings(latest.metadata["retriever"]),
                        block_settings(config.to_dict()))
  if changed:
    raise InputError(f"the index root holds another retriever's vectors (differing, saved: the "
                     f"root's, now: this one's: {'; '.join(changed)}): use another --index_dir",
                     path=root.root, field="index_dir")


def embed_and_publish(store: BlockStore, tokenizer: Tokenizer, params: Any,
                      config: MultiVectorConfig, index: MultiVectorIndexConfig, *,
                      checkpoint_step: int, run: dict[str, Any], mesh=None,
                      show_progress: bool = False) -> IndexVersion:
  """Encodes every block of `store` with `params` (checkpoint `checkpoint_step` of `run`,
  `runs.run_identity`) and publishes the vectors as a new version of `index.index_dir`."""
  root = index.root()
  check_publishable(root, config, store, index.storage)
  started = time.time()
  corpus = encode_blocks(store, tokenizer, params, config,
                         batch_size=index.embedding.embed_batch_size,
                         dtype=index.embedding.dtype, mesh=mesh, show_progress=show_progress)
  seconds = time.time() - started
  return multi_vector_index.publish(
      root, corpus, index.storage, normalized=config.normalize,
      store_fingerprint=store.fingerprint, checkpoint_step=checkpoint_step,
      metadata={"retriever": config.to_dict(), embedding.INDEXED_RUN: run,
                "tokenizer_fingerprint": store.tokenizer_fingerprint,
                "embed_dtype": index.embedding.embed_dtype, "embed_seconds": round(seconds, 2),
                "blocks_per_second": round(len(store) / seconds, 1)})


def check_query_encoder(version: IndexVersion, run: runs.MultiVectorRun) -> None:
  """Refuses to search `version` with the query encoder of `run` unless the index was embedded
  from this very checkpoint of this run (as dense indexes are: `runs.check_embedded_from`)."""
  indexed = indexed_retriever(version)
  runs.check_embedded_from(version, run)
  if version.checkpoint_step != run.step:
    raise InputError(f"the index was embedded from checkpoint {version.checkpoint_step}, the "
                     f"queries would be encoded with checkpoint {run.step}: re-embed, or pass "
                     f"--checkpoint_step={version.checkpoint_step}", path=version.directory)
  if version.metadata["tokenizer_fingerprint"] != run.tokenizer_fingerprint:
    raise InputError(f"the index was tokenized with {version.metadata['tokenizer_fingerprint']}, "
                     f"the run with {run.tokenizer_fingerprint}", path=version.directory)
  changed = differences(block_settings(indexed.to_dict()), block_settings(run.config.to_dict()))
  if changed:
    raise InputError("the run's retriever is not the one that embedded the index (saved: the "
                     f"index's, now: the run's: {'; '.join(changed)})", path=version.directory)


MultiVectorBackend = Literal["exact", "plaid"]


@dataclasses.dataclass(frozen=True)
class MultiVectorSearch:
  """A multi-vector run (--task=colbert, me_bert or poly_encoder) and the index embedded from
  it, and how the index is searched."""
  run: runs.RunCheckpoint = nested(runs.RunCheckpoint())
  index_dir: str = setting("", "The multi-vector index root (python -m orqa_realm.embed).")
  backend: MultiVectorBackend = setting(
      "exact", "exact: MaxSim (or the poly-encoder's score) of every block, on the devices; "
      "plaid: PLAID over a compressed index (ColBERT and ME-BERT; --plaid_*).",
      flag="multi_vector_backend")
  embedding: embedding.EmbedSettings = nested(embedding.EmbedSettings())


def open_searcher(version: IndexVersion, store: BlockStore, config: MultiVectorConfig,
                  settings: MultiVectorSearch, plaid: PLAIDSettings, mesh):
  """The `settings.backend` searcher over `version` (checked to be `store`'s blocks); `plaid`:
  PLAID's settings, with that backend."""
  storage.check_matches_store(version, store)
  index = multi_vector_index.load(version)
  if settings.backend == "exact":
    return ExactMultiVectorSearcher(index.token_vectors(),
                                    functools.partial(multi_vector.scores, config), mesh=mesh)
  if isinstance(config, PolyEncoderConfig):
    raise InputError("PLAID ranks by MaxSim: the poly-encoder's attention score is searched "
                     "exactly (--multi_vector_backend=exact)", field="multi_vector_backend")
  if index.codec is None:
    raise InputError("PLAID searches a compressed index: this version stores its vectors "
                     "uncompressed (embed with --colbert_nbits=1, 2 or 4)",
                     path=version.directory, field="multi_vector_backend")
  return PLAIDSearcher(index.codec, index.compressed, index.lengths, plaid)


def text_searcher(store: BlockStore, tokenizer: Tokenizer, settings: MultiVectorSearch,
                  kind: str, mesh, plaid: PLAIDSettings = PLAIDSettings()
                  ) -> tuple[MultiVectorTextSearcher, dict[str, Any]]:
  """The newest version of `settings.index_dir` behind the query encoder of the run it was
  embedded from (of kind `kind`: colbert, me_bert or poly_encoder), and what they were built
  from (for metrics.json). Everything is checked before the run's parameters are read."""
  workdir = settings.run.workdir
  if not workdir:
    raise InputError(f"--retrieval={kind} searches with a trained run's query encoder: pass "
                     "--workdir", field="workdir")
  version = embedding.latest_version(settings.index_dir)
  indexed_retriever(version)  # a dense index is refused here
  info = runs.open_multi_vector_run(workdir)
  if info.config.kind != kind:
    raise InputError(f"--retrieval={kind}, but the run trains {info.config.kind}",
                     path=workdir, field="retrieval")
  run = runs.restore_multi_vector_run(workdir, settings.run.step, mesh)
  check_query_encoder(version, run)
  searcher = open_searcher(version, store, run.config, settings, plaid, mesh)

  def encode(texts: Sequence[str]) -> VectorSet:
    return encode_queries(texts, tokenizer, run.params, run.config,
                          batch_size=settings.embedding.embed_batch_size,
                          dtype=settings.embedding.dtype, mesh=mesh)

  return MultiVectorTextSearcher(encode, searcher), dict(
      index_version=version.version, index_checkpoint_step=version.checkpoint_step,
      index_run=runs.indexed_run(version), index_storage=version.details,
      query_checkpoint_step=run.step, backend=settings.backend,
      plaid=dataclasses.asdict(plaid) if settings.backend == "plaid" else None,
      retriever=run.config.to_dict())

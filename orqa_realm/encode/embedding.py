"""Embedding a block store or queries with a retriever's parameters, and publishing the block
embeddings as a new index version.

Blocks are sorted by length and batched so that each batch is padded only to its own longest
block (rounded up to a multiple of 32, which bounds the number of compiled shapes); batches are
split over all devices. What a version was embedded with (the retriever's settings, the
tokenizer's fingerprint, the checkpoint step) is recorded in its manifest, so that searching it
with another query encoder is refused (`check_query_encoder`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from orqa_realm.core import parallel
from orqa_realm.core.config import differences, nested, setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.tokenization import TokenBatch, Tokenizer
from orqa_realm.index import storage
from orqa_realm.index.exact import next_power_of_two
from orqa_realm.index.scann_index import ScannConfig
from orqa_realm.index.storage import IndexRoot, IndexVersion, StorageDtype
from orqa_realm.modeling import retriever


@dataclasses.dataclass(frozen=True)
class EmbedSettings:
  """How blocks or queries are embedded."""
  embed_batch_size: int = setting(128, "Blocks per embedding batch (over all devices).")
  embed_dtype: Literal["bfloat16", "float32"] = setting(
      "bfloat16", "Matmul dtype when embedding (float32 accumulation). float32 is faster on CPUs "
      "without bf16 instructions (AVX2-only machines).")

  @property
  def dtype(self):
    return jnp.dtype(self.embed_dtype)


@dataclasses.dataclass(frozen=True)
class IndexSearch:
  """An index root, and how its versions are searched."""
  index_dir: str = setting(
      "", "Index root directory: versions published by `python -m orqa_realm.embed` or the "
      "refresher, the newest named by its LATEST file.")
  backend: Literal["exact", "scann"] = setting(
      "exact", "Searcher: exact top-k on the devices, or ScaNN (published versions then include "
      "a ScaNN index).", flag="index_backend")


@dataclasses.dataclass(frozen=True)
class IndexConfig(IndexSearch):
  """Where and how block embeddings are published as index versions, and searched."""
  storage_dtype: StorageDtype = setting(
      "float32", "How embeddings are stored on disk (int8: one float32 scale per row).",
      flag="index_storage_dtype")
  keep_versions: int = setting(3, "Index versions kept on disk.", flag="index_keep_versions")
  embedding: EmbedSettings = nested(EmbedSettings())
  scann: ScannConfig = nested(ScannConfig())

  def root(self) -> IndexRoot:
    if not self.index_dir:
      raise InputError("no index directory given", field="index_dir")
    return IndexRoot(self.index_dir, keep=self.keep_versions)

  def scann_config(self) -> ScannConfig | None:
    """The ScaNN configuration to publish with, or None for the exact backend."""
    return self.scann if self.backend == "scann" else None


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


@functools.lru_cache(maxsize=8)
def make_tower_embedder(config: retriever.RetrieverConfig, dtype, mesh, method):
  """Jitted (params, TokenBatch [batch, length]) -> [batch, embedding_size] float32 for one
  tower (`method`: `DualEncoder.embed_blocks` or `.embed_queries`), the batch split over `mesh`
  and the result replicated; the params stay where they are (replicated, or split over "fsdp"
  by training).

  Cached, so that repeated embeddings (an evaluation every N training steps) reuse the compiled
  shapes; params are arguments, so no weights are kept alive by the cache."""
  model = retriever.DualEncoder(config, dtype)
  replicated = parallel.replicated(mesh)

  def embed(params, inputs: TokenBatch) -> jax.Array:
    return model.apply({"params": params}, inputs, method=method)

  return jax.jit(embed, in_shardings=(None, parallel.batch_sharding(mesh)),
                 out_shardings=replicated)


def padded_block_batches(store: BlockStore, config: retriever.RetrieverConfig, *, batch_size: int,
                         rows: np.ndarray | None = None
                         ) -> Iterator[tuple[np.ndarray, TokenBatch]]:
  """(positions in `rows` [<= batch_size], inputs [batch_size, length]) for each
  `length_batches` batch of the store's blocks `rows` (default: all, so positions are blocks).
  The last batch is topped up with copies of its first block, whose results the caller drops,
  so that every batch has one shape per length."""
  rows = np.arange(len(store)) if rows is None else np.asarray(rows)
  lengths = store.input_lengths(config.block_format)[rows]
  for batch in length_batches(lengths, batch_size=batch_size, max_length=config.block_length):
    blocks = rows[batch.blocks]
    padded = np.resize(blocks, batch_size) if len(blocks) < batch_size else blocks
    yield batch.blocks, store.encode(padded, batch.length, config.block_format)


def embed_blocks(store: BlockStore, params: Any, config: retriever.RetrieverConfig, *,
                 batch_size: int = 128, dtype=jnp.bfloat16, mesh=None,
                 show_progress: bool = False, rows: np.ndarray | None = None) -> np.ndarray:
  """[num_rows, embedding_size] float32 embeddings of the blocks `rows` of `store` (default:
  every block), each cut to `config.block_length` wordpieces.

  `params` may be the whole retriever's or only the block tower's.
  """
  num_rows = len(store) if rows is None else len(rows)
  mesh = mesh if mesh is not None else parallel.make_mesh()
  batch_size = math.ceil(batch_size / mesh.size) * mesh.size
  embed = make_tower_embedder(config, dtype, mesh, retriever.DualEncoder.embed_blocks)
  params = jax.device_put(retriever.tower_params(params, config, "block"),
                          parallel.replicated(mesh))
  embeddings = np.empty((num_rows, config.embedding_size), np.float32)
  progress = tqdm.tqdm(total=num_rows, unit="block", disable=not show_progress)
  # One batch in flight while the next is packed on the host: dispatch is asynchronous.
  in_flight: collections.deque = collections.deque()

  def collect():
    blocks, result = in_flight.popleft()
    embeddings[blocks] = np.asarray(jax.device_get(result))[:len(blocks)]
    progress.update(len(blocks))

  for blocks, inputs in padded_block_batches(store, config, batch_size=batch_size, rows=rows):
    in_flight.append((blocks, embed(params, parallel.to_global(inputs, mesh))))
    if len(in_flight) > 1:
      collect()
  while in_flight:
    collect()
  progress.close()
  return embeddings


# The index metadata key of the run a version was embedded from (None: pretrained weights).
INDEXED_RUN = "run"


def embed_and_publish(store: BlockStore, params: Any, config: retriever.RetrieverConfig,
                      index: IndexConfig, *, checkpoint_step: int | None,
                      run: dict[str, Any] | None, mesh=None,
                      metadata: dict[str, Any] | None = None,
                      show_progress: bool = False) -> IndexVersion:
  """Embeds the store and publishes the embeddings (and a ScaNN index with the scann backend) as
  a new version of `index.index_dir`, recording the retriever's settings, the tokenizer and the
  run (`runs.run_identity`, None for pretrained weights) the params come from.

  Refused before any embedding when the root holds versions of another store or retriever
  (`check_publishable`)."""
  if (run is None) != (checkpoint_step is None):
    raise ValueError(f"a version from a run names its checkpoint and the other way round: run "
                     f"{run}, checkpoint {checkpoint_step}")
  check_publishable(index.root(), config, store)
  started = time.time()
  embeddings = embed_blocks(store, params, config, batch_size=index.embedding.embed_batch_size,
                            dtype=index.embedding.dtype, mesh=mesh, show_progress=show_progress)
  embed_seconds = time.time() - started
  return index.root().publish(
      embeddings, store_fingerprint=store.fingerprint, checkpoint_step=checkpoint_step,
      storage_dtype=index.storage_dtype, scann_config=index.scann_config(),
      metadata=dict(metadata or {}, retriever=config.to_dict(), **{INDEXED_RUN: run},
                    tokenizer_fingerprint=store.tokenizer_fingerprint,
                    embed_dtype=index.embedding.embed_dtype, embed_seconds=round(embed_seconds, 2),
                    blocks_per_second=round(len(store) / embed_seconds, 1)))


def latest_version(index_dir: str) -> IndexVersion:
  """The newest version of the index root `index_dir`, or an error saying how to make one."""
  if not index_dir:
    raise InputError("no index directory given", field="index_dir")
  version = IndexRoot(index_dir).latest()
  if version is None:
    raise InputError("no index version yet: publish one with python -m orqa_realm.embed",
                     path=index_dir)
  return version


def check_publishable(root: IndexRoot, config: retriever.RetrieverConfig,
                      store: BlockStore) -> None:
  """Refuses to publish embeddings of `store` by `config` into a root whose newest version holds
  another store's blocks or another retriever's embeddings (architecture or tokenizer): readers
  of the root (evaluation, a trainer's index handle) would find a version they cannot search.
  Also checks the root is writable, before the embedding work."""
  latest = storage.version_to_continue(root, storage.DENSE)
  if latest is None or "retriever" not in latest.metadata:  # none, or unusable (old layout)
    return
  # A store grown from the root's (preprocess --grow_from) continues it.
  if latest.store_fingerprint != store.fingerprint and store.ancestor(
      latest.store_fingerprint) is None:
    raise InputError(f"the index root holds embeddings of another block store (fingerprint "
                     f"{latest.store_fingerprint}, --block_store {store.directory} is "
                     f"{store.fingerprint}): use another --index_dir", path=root.root,
                     field="index_dir")
  indexed = indexed_retriever(latest)
  architecture = lambda values, tokenizer: dict(
      {name: values[name] for name in retriever.ARCHITECTURE_FIELDS}, tokenizer=tokenizer)
  changed = differences(
      architecture(indexed.to_dict(), latest.metadata["tokenizer_fingerprint"]),
      architecture(config.to_dict(), store.tokenizer_fingerprint))
  if changed:
    raise InputError(
        f"the index root holds embeddings of another retriever (version {latest.version}: "
        f"{json.dumps(indexed.to_dict(), sort_keys=True)}; this one: "
        f"{json.dumps(config.to_dict(), sort_keys=True)}; differing (saved: the root's, now: "
        f"this one's): {'; '.join(changed)}): "
        "use another --index_dir", path=root.root, field="index_dir")


def indexed_retriever(version: IndexVersion) -> retriever.RetrieverConfig:
  """The retriever whose block tower embedded `version` (recorded in its manifest)."""
  version.check_kind(storage.DENSE)
  if "retriever" not in version.metadata or "tokenizer_fingerprint" not in version.metadata:
    raise InputError("this index version was published by an earlier orqa_realm and does not "
                     "record the retriever it was embedded with: re-embed it",
                     path=version.directory)
  return retriever.RetrieverConfig.from_dict(version.metadata["retriever"])


def check_query_encoder(version: IndexVersion, config: retriever.RetrieverConfig,
                        tokenizer_fingerprint: str, *,
                        fields: Sequence[str] = retriever.ALL_FIELDS) -> None:
  """Refuses to search `version` with a query encoder other than the retriever it was embedded
  with (`fields` of its settings, and its tokenizer): its scores would not be the ones the
  retriever was trained for, and recall would silently drop."""
  indexed = indexed_retriever(version)
  changed = [f"{name}: index {getattr(indexed, name)!r}, query encoder {getattr(config, name)!r}"
             for name in fields if getattr(indexed, name) != getattr(config, name)]
  if version.metadata["tokenizer_fingerprint"] != tokenizer_fingerprint:
    changed.append(f"tokenizer: index {version.metadata['tokenizer_fingerprint']}, query encoder "
                   f"{tokenizer_fingerprint}")
  if changed:
    raise InputError("the query encoder is not the retriever this index was embedded with ("
                     + "; ".join(changed) + ")", path=version.directory)


def embed_query_tokens(params: Any, queries: TokenBatch, config: retriever.RetrieverConfig, *,
                       dtype, mesh) -> np.ndarray:
  """[global batch, embedding_size] float32 query-tower embeddings of a global batch of packed
  queries of which this host passes its own rows, on every host (e.g. to search an index before
  a training step: a search over the mesh takes the same queries on every host)."""
  embed = make_tower_embedder(config, dtype, mesh, retriever.DualEncoder.embed_queries)
  return np.asarray(parallel.fetch_replicated(
      embed(params, parallel.global_from_local(queries, mesh))))


def embed_queries(questions: list[str], params: Any, config: retriever.RetrieverConfig,
                  tokenizer: Tokenizer, *, batch_size: int = 256,
                  dtype=jnp.float32, mesh=None) -> np.ndarray:
  """[num_questions, embedding_size] float32 query-tower embeddings of `questions`, each cut to
  `config.query_length` wordpieces."""
  mesh = mesh if mesh is not None else parallel.make_mesh()
  # A power of two at most: a server's varying batches compile a few shapes, not one each.
  fitted = next_power_of_two(max(len(questions), 1))
  batch_size = math.ceil(min(batch_size, fitted) / mesh.size) * mesh.size
  embed = make_tower_embedder(config, dtype, mesh, retriever.DualEncoder.embed_queries)
  params = jax.device_put(params, parallel.replicated(mesh))
  embeddings = np.empty((len(questions), config.embedding_size), np.float32)
  for start in range(0, len(questions), batch_size):
    chunk = questions[start:start + batch_size]
    # The last batch is padded with empty questions, whose results are dropped.
    inputs = tokenizer.encode_queries(chunk + [""] * (batch_size - len(chunk)),
                                     config.query_length)
    result = jax.device_get(embed(params, parallel.to_global(inputs, mesh)))
    embeddings[start:start + len(chunk)] = result[:len(chunk)]
  return embeddings



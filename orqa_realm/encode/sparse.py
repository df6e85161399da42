"""Encoding a block store and query texts with a SPLADE model into sparse term-weight vectors,
and the text searcher over their inverted index (`index/sparse.py`).

The model comes from a SPLADE run (`--workdir`, its newest or `--checkpoint_step` checkpoint) or
from a BERT directory with a masked-LM head (`--bert`: e.g. `bert_tiny_splade`, a SPLADE
fine-tune read as it ships). Blocks go through in length-sorted batches split over the devices,
as dense embedding does; each batch's [batch, vocab] weights become CSR rows (keeping each
block's `--splade_max_block_terms` heaviest terms when set), stacked in store order.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
import tqdm
from absl import logging

from orqa_realm.core import parallel
from orqa_realm.core.config import check_minimum, nested, setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.pretrained import model_fingerprint, resolve_model_dir
from orqa_realm.data.tokenization import Tokenizer
from orqa_realm.encode import embedding, runs
from orqa_realm.index import sparse
from orqa_realm.index.searcher import EncodedTextSearcher
from orqa_realm.modeling import mlm, partitioning, splade
from orqa_realm.modeling.hf_import import load_hf_bert


@dataclasses.dataclass(frozen=True)
class SparseSearch:
  """A SPLADE run (or, without one, --bert with its MLM head), its index of the store, and how
  the index is built."""
  run: runs.RunCheckpoint = nested(runs.RunCheckpoint())
  index_dir: str = setting(
      "", "Where the SPLADE index of --block_store is kept: loaded when there (refused if "
      "another store, vocabulary or model made it), built and saved there otherwise. Empty: "
      "built in memory for the run.", flag="sparse_index_dir")
  max_block_terms: int = setting(
      0, "Keep each block's this many heaviest terms (0: every nonzero weight).",
      flag="splade_max_block_terms")
  batch_size: int = setting(
      16, "Blocks or queries per encoding batch (over all devices): each holds [batch, length, "
      "vocab] logits.", flag="splade_batch_size")

  def __post_init__(self):
    check_minimum("splade_max_block_terms", self.max_block_terms, 0)
    check_minimum("splade_batch_size", self.batch_size, 1)


class SpladeModel(NamedTuple):
  """A SPLADE encoder's settings and weights, and what they are (an index records it)."""
  config: splade.SpladeConfig
  params: Any  # the knowledge-encoder layout: bert + MLM head
  tokenizer_fingerprint: str
  description: dict[str, Any]


def pretrained_model(bert: str, config: splade.SpladeConfig) -> SpladeModel:
  """A BERT directory with its masked-LM head (a `BertForMaskedLM`) as a SPLADE encoder;
  refused without a head, which is what SPLADE reads."""
  directory = resolve_model_dir(bert)
  pretrained = load_hf_bert(directory)
  head = mlm.mlm_head_params(pretrained.head_tensors, pretrained.config, directory)
  if head is None:
    raise InputError("has no masked-LM head (cls.predictions.*): SPLADE reads the vocabulary "
                     "through it; pass a BertForMaskedLM (e.g. bert_tiny_splade) or a "
                     "--workdir of --task=splade", path=directory, field="bert")
  config = config.with_bert(pretrained.config)
  params = partitioning.unbox(mlm.init_params(config.encoder, jax.random.key(0),
                                              pretrained.params, head))
  return SpladeModel(config, params, Tokenizer(directory).fingerprint,
                     dict(bert=directory, weights=model_fingerprint(directory),
                          settings=config.to_dict()))


@functools.lru_cache(maxsize=8)
def make_term_weighter(config: splade.SpladeConfig, dtype, mesh):
  """Jitted (params, TokenBatch [batch, length]) -> [batch, vocab] float32 term weights, the
  batch split over `mesh` and the result replicated."""
  model = mlm.KnowledgeAugmentedEncoder(config.encoder, dtype)
  return jax.jit(lambda params, inputs: splade.term_weights(model, params, inputs),
                 in_shardings=(None, parallel.batch_sharding(mesh)),
                 out_shardings=parallel.replicated(mesh))


def sparse_rows(weights: np.ndarray, max_terms: int = 0) -> scipy.sparse.csr_matrix:
  """[rows, vocab] weights as CSR, each row cut to its `max_terms` heaviest terms (0: all)."""
  if max_terms and max_terms < weights.shape[1]:
    cut = np.partition(weights, -max_terms, axis=1)[:, -max_terms][:, None]  # [rows, 1]
    # Ties at the cut can keep a few more than max_terms; none is dropped arbitrarily.
    weights = np.where(weights >= cut, weights, 0.0)
  return scipy.sparse.csr_matrix(weights.astype(np.float32))


def encode_blocks(store: BlockStore, model: SpladeModel, *, batch_size: int = 16,
                  max_terms: int = 0, dtype=jnp.float32, mesh=None,
                  show_progress: bool = False) -> scipy.sparse.csr_matrix:
  """[blocks, vocab] CSR term weights of every block of `store`, in store order."""
  mesh = mesh if mesh is not None else parallel.make_mesh()
  batch_size = math.ceil(batch_size / mesh.size) * mesh.size
  weigh = make_term_weighter(model.config, dtype, mesh)
  params = jax.device_put(model.params, parallel.replicated(mesh))
  rows, positions = [], []
  progress = tqdm.tqdm(total=len(store), unit="block", disable=not show_progress)
  for batch_positions, inputs in embedding.padded_block_batches(store, model.config,
                                                                batch_size=batch_size):
    weights = np.asarray(jax.device_get(weigh(params, parallel.to_global(inputs, mesh))))
    rows.append(sparse_rows(weights[:len(batch_positions)], max_terms))
    positions.append(batch_positions)
    progress.update(len(batch_positions))
  progress.close()
  order = np.argsort(np.concatenate(positions), kind="stable")
  return scipy.sparse.vstack(rows).tocsr()[order]


def encode_queries(texts: Sequence[str], tokenizer: Tokenizer, model: SpladeModel, *,
                   batch_size: int = 64, dtype=jnp.float32,
                   mesh=None) -> scipy.sparse.csr_matrix:
  """[texts, vocab] CSR term weights of query texts."""
  mesh = mesh if mesh is not None else parallel.make_mesh()
  batch_size = math.ceil(batch_size / mesh.size) * mesh.size
  weigh = make_term_weighter(model.config, dtype, mesh)
  params = jax.device_put(model.params, parallel.replicated(mesh))
  question_ids = tokenizer.tokenize(list(texts))
  rows = []
  for start in range(0, len(question_ids), batch_size):
    chunk = question_ids[start:start + batch_size]
    # The last batch is padded with empty queries, whose rows are dropped.
    inputs = tokenizer.pack(chunk + [[]] * (batch_size - len(chunk)),
                            max_length=model.config.query_length)
    weights = np.asarray(jax.device_get(weigh(params, parallel.to_global(inputs, mesh))))
    rows.append(sparse_rows(weights[:len(chunk)]))
  return scipy.sparse.vstack(rows).tocsr()


def open_or_build(store: BlockStore, tokenizer: Tokenizer, model: SpladeModel,
                  settings: SparseSearch, mesh) -> sparse.SparseIndex:
  """The SPLADE index of `store` by `model`: loaded from `settings.index_dir` when one is there,
  otherwise encoded (and saved there when a directory is given)."""
  if model.tokenizer_fingerprint != store.tokenizer_fingerprint:
    raise InputError(f"the SPLADE model's tokenizer ({model.tokenizer_fingerprint}) is not the "
                     f"block store's ({store.tokenizer_fingerprint})", path=store.directory)
  vocabulary = dict(size=model.config.bert.vocab_size,
                    tokenizer_fingerprint=model.tokenizer_fingerprint)
  encoder = dict(model.description, max_block_terms=settings.max_block_terms)
  if sparse.exists(settings.index_dir):
    return sparse.SparseIndex.load(settings.index_dir, store, vocabulary, encoder)
  blocks = encode_blocks(store, model, batch_size=settings.batch_size,
                         max_terms=settings.max_block_terms, mesh=mesh, show_progress=True)
  index = sparse.SparseIndex(blocks, vocabulary, encoder)
  logging.info("SPLADE index of %d blocks: %d postings (%.1f terms a block)", index.num_rows,
               index.num_postings, index.num_postings / max(index.num_rows, 1))
  if settings.index_dir:
    index.save(settings.index_dir, store)
  return index


def text_searcher(store: BlockStore, tokenizer: Tokenizer, model: SpladeModel,
                  settings: SparseSearch, mesh) -> tuple[EncodedTextSearcher, dict[str, Any]]:
  """A searcher of query texts over the store's SPLADE index, and what it is."""
  index = open_or_build(store, tokenizer, model, settings, mesh)
  encode = functools.partial(encode_queries, tokenizer=tokenizer, model=model, mesh=mesh)
  return EncodedTextSearcher(encode, index), dict(
      splade=model.description, postings=index.num_postings,
      terms_per_block=index.num_postings / max(index.num_rows, 1))


def run_model(workdir: str, step: int | None, mesh) -> SpladeModel:
  """The SPLADE encoder of a `--task=splade` run's checkpoint `step` (None: the newest)."""
  run = runs.restore_splade_run(workdir, step, mesh)
  return SpladeModel(run.config, run.params, run.tokenizer_fingerprint,
                     dict(workdir=run.workdir, run_id=run.run_id, step=run.step))

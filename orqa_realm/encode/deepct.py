"""Rewriting a block store with a DeepCT run's term weights, and the text searcher over the
rewritten BM25 index (`index/deepct.py`).

Blocks go through the term weighter in length-sorted batches split over the devices, as dense
embedding does; each block's weights become term frequencies (round(weight x
`--deepct_scale`), `data/deepct.py`) and the rewritten blocks are indexed by BM25 with its own
`--deepct_k1` and `--deepct_b` (DeepCT's frequencies reach the scale, far above a passage's raw
counts, so the best k1 and b need not be BM25's). Queries are split into words and
analysed as the run's training split them, so a query term and an indexed term are the same
string for the same word.
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
import tqdm
from absl import logging

from orqa_realm.core import parallel
from orqa_realm.core.config import check_minimum, nested, setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.deepct import WordSplitter, rewritten_terms, term_frequencies
from orqa_realm.data.tokenization import Tokenizer
from orqa_realm.encode import embedding, runs
from orqa_realm.index import bm25
from orqa_realm.index.deepct import RewrittenBM25, exists
from orqa_realm.index.searcher import EncodedTextSearcher
from orqa_realm.modeling import deepct


@dataclasses.dataclass(frozen=True)
class RewriteSettings:
  """How a DeepCT run's weights become a BM25 index."""
  scale: float = setting(
      100.0, "A word's weight x this, rounded, is its term's frequency in the rewritten block "
      "(DeepCT's scaling parameter; the paper's 100).", flag="deepct_scale")
  # DeepCT's authors' setting for their scale of 100 on MS MARCO (BM25's own is 0.9, 0.4 here):
  # frequencies up to 100 saturate late only with a large k1.
  k1: float = setting(10.0, "The rewritten index's BM25 term frequency saturation.",
                      flag="deepct_k1")
  b: float = setting(0.9, "The rewritten index's BM25 length normalisation.", flag="deepct_b")

  def __post_init__(self):
    if self.scale <= 0:
      raise InputError(f"must be positive, not {self.scale}", field="deepct_scale")


@dataclasses.dataclass(frozen=True)
class DeepCTSearch:
  """A DeepCT run, how it rewrites the store, and where the rewritten index is kept."""
  run: runs.RunCheckpoint = nested(runs.RunCheckpoint())
  rewrite: RewriteSettings = nested(RewriteSettings())
  index_dir: str = setting(
      "", "Where the DeepCT-rewritten BM25 index of --block_store is kept: loaded when there "
      "(refused if another store, run or setting made it), built and saved there otherwise. "
      "Empty: built in memory for the run.", flag="deepct_index_dir")
  batch_size: int = setting(64, "Blocks per term-weighting batch (over all devices).",
                            flag="deepct_batch_size")

  def __post_init__(self):
    check_minimum("deepct_batch_size", self.batch_size, 1)


class DeepCTModel(NamedTuple):
  """A DeepCT term weighter, how its words become terms, and what it is (an index records it)."""
  config: deepct.DeepCTConfig
  params: Any
  analyzer: dict[str, str]  # {stemmer, stopwords}, as `bm25.BM25Settings` names them
  tokenizer_fingerprint: str
  description: dict[str, Any]


def run_model(workdir: str, step: int | None, mesh) -> DeepCTModel:
  """The term weighter of a `--task=deepct` run's checkpoint `step` (None: the newest)."""
  run = runs.restore_deepct_run(workdir, step, mesh)
  return DeepCTModel(run.config, run.params, run.analyzer, run.tokenizer_fingerprint,
                     dict(workdir=run.workdir, run_id=run.run_id, step=run.step))


def word_splitter(tokenizer: Tokenizer, analyzer: dict[str, str]) -> WordSplitter:
  """Splits `tokenizer`'s inputs into words and their BM25 terms under `analyzer`."""
  hf = tokenizer.hf_tokenizer
  analyze = bm25.analyzer(bm25.BM25Settings(**analyzer))
  return WordSplitter(hf.convert_ids_to_tokens(list(range(tokenizer.vocab_size))),
                      hf.all_special_ids, analyze)


@functools.lru_cache(maxsize=8)
def make_term_weighter(config: deepct.DeepCTConfig, dtype, mesh):
  """Jitted (params, TokenBatch [batch, length]) -> [batch, length] float32 weights, the batch
  split over `mesh` and the result replicated."""
  model = deepct.TermWeighter(config, dtype)
  return jax.jit(lambda params, inputs: model.apply({"params": params}, inputs),
                 in_shardings=(None, parallel.batch_sharding(mesh)),
                 out_shardings=parallel.replicated(mesh))


def rewrite_blocks(store: BlockStore, splitter: WordSplitter, config: deepct.DeepCTConfig,
                   params: Any, *, scale: float, batch_size: int = 64, dtype=jnp.float32,
                   mesh=None, show_progress: bool = False) -> list[list[str]]:
  """Every block of `store` rewritten as its terms, each repeated its predicted frequency, in
  store order."""
  mesh = mesh if mesh is not None else parallel.make_mesh()
  batch_size = math.ceil(batch_size / mesh.size) * mesh.size
  weigh = make_term_weighter(config, dtype, mesh)
  params = jax.device_put(params, parallel.replicated(mesh))
  rewritten: list[list[str]] = [[] for _ in range(len(store))]
  progress = tqdm.tqdm(total=len(store), unit="block", disable=not show_progress)
  for blocks, inputs in embedding.padded_block_batches(store, config, batch_size=batch_size):
    weights = np.asarray(jax.device_get(weigh(params, parallel.to_global(inputs, mesh))))
    for row, block in enumerate(blocks):
      words = splitter.input_words(inputs.token_ids[row])
      rewritten[block] = rewritten_terms(term_frequencies(words, weights[row], scale))
    progress.update(len(blocks))
  progress.close()
  return rewritten


def open_or_build(store: BlockStore, splitter: WordSplitter, model: DeepCTModel,
                  settings: DeepCTSearch, mesh) -> RewrittenBM25:
  """The DeepCT index of `store` by `model`: loaded from `settings.index_dir` when one is there,
  otherwise rewritten (its words split by `splitter`, `word_splitter` of the model's analyzer)
  and indexed (and saved there when a directory is given)."""
  if model.tokenizer_fingerprint != store.tokenizer_fingerprint:
    raise InputError(f"the DeepCT model's tokenizer ({model.tokenizer_fingerprint}) is not the "
                     f"block store's ({store.tokenizer_fingerprint})", path=store.directory)
  description = dict(model.description, analyzer=model.analyzer,
                     **dataclasses.asdict(settings.rewrite))
  if exists(settings.index_dir):
    return RewrittenBM25.load(settings.index_dir, store, description)
  blocks_terms = rewrite_blocks(store, splitter, model.config, model.params,
                                scale=settings.rewrite.scale, batch_size=settings.batch_size,
                                mesh=mesh, show_progress=True)
  index = RewrittenBM25.build(blocks_terms, k1=settings.rewrite.k1, b=settings.rewrite.b,
                              description=description)
  logging.info("DeepCT index of %d blocks: %.1f term occurrences a block", index.num_rows,
               index.num_terms / max(index.num_rows, 1))
  if settings.index_dir:
    index.save(settings.index_dir, store)
  return index


def query_terms(texts: Sequence[str], tokenizer: Tokenizer,
                splitter: WordSplitter) -> list[list[str]]:
  """The terms of each query text, its words analysed as the blocks' were."""
  return [splitter.text_terms(ids) for ids in tokenizer.tokenize(list(texts))]


def text_searcher(store: BlockStore, tokenizer: Tokenizer, model: DeepCTModel,
                  settings: DeepCTSearch, mesh) -> tuple[EncodedTextSearcher, dict[str, Any]]:
  """A searcher of query texts over the store's DeepCT index, and what it is."""
  # One splitter for the blocks and the queries: each distinct word is analysed once.
  splitter = word_splitter(tokenizer, model.analyzer)
  index = open_or_build(store, splitter, model, settings, mesh)
  encode = functools.partial(query_terms, tokenizer=tokenizer, splitter=splitter)
  return EncodedTextSearcher(encode, index), dict(
      deepct=index.description, term_occurrences=index.num_terms,
      terms_per_block=index.num_terms / max(index.num_rows, 1))

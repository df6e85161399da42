"""DeepCT training (Dai and Callan 2019): a BERT term weighter regressed onto query term recall,
whose weights then rewrite the term frequencies BM25 indexes.

    python -m orqa_realm.train --flagfile=configs/deepct_squad.cfg

The training passages are the positives of the training queries (DPR's rules, `data/dpr.py`:
SQuAD's gold paragraph, a BEIR query's judged-relevant documents). Each step takes `batch_size`
of those passages (seeded epochs of permutations); the target of each word is the fraction of
the passage's relevant queries whose BM25 terms include the word's term (`data/deepct.py`), and
the loss is the mean squared error over the words that have a term (the weight layer reads each
word's first wordpiece). Each evaluation rewrites the store with the current weights and logs
the held-out questions' answer recall@k over the rewritten BM25 index (`--deepct_scale`,
`--deepct_k1`, `--deepct_b`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from orqa_realm.core.config import nested
from orqa_realm.data.deepct import query_term_recall, word_targets
from orqa_realm.data.qa import QAEvaluation, question_indices
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.encode import deepct as deepct_encode
from orqa_realm.encode import runs
from orqa_realm.index.deepct import RewrittenBM25
from orqa_realm.index.searcher import EncodedTextSearcher
from orqa_realm.modeling import deepct
from orqa_realm.tasks.base import StepContext, Task, TaskContext
from orqa_realm.tasks.common import StoreAndBert, with_store_path
from orqa_realm.tasks.pairs import TrainingPairs, build_examples, mining_searcher
from orqa_realm.tasks.retrieval_eval import answer_recall_of_text_searcher


class DeepCTInputs(NamedTuple):
  blocks: TokenBatch  # [batch, block_length]
  targets: np.ndarray  # [batch, block_length] float32 query term recall at each word's first piece
  mask: np.ndarray  # [batch, block_length] float32, 1 where a target is read


@dataclasses.dataclass(frozen=True)
class DeepCTTaskConfig:
  """The settings of DeepCT training."""
  source: StoreAndBert = nested(StoreAndBert())
  deepct: deepct.DeepCTConfig = nested(deepct.DeepCTConfig())
  # The training queries and their relevant blocks; its BM25 settings also say how words
  # become terms (stemmer, stop words), for the targets and for the index.
  pairs: TrainingPairs = nested(TrainingPairs())
  rewrite: deepct_encode.RewriteSettings = nested(deepct_encode.RewriteSettings())
  evaluation: QAEvaluation = nested(QAEvaluation())


class DeepCTTask(Task):
  name = "deepct"
  config_class = DeepCTTaskConfig
  trains_block_tower = False  # its index is BM25's: the dense refresher has nothing to embed
  accumulates_gradients = True  # a mean over words, weighed by `loss_weight`

  def __init__(self, config: DeepCTTaskConfig, context: TaskContext):
    config.pairs.check(reads_bm25=True)
    self.store, self.tokenizer = config.source.open_store()
    self.config = dataclasses.replace(
        with_store_path(config, self.store),
        deepct=config.deepct.with_bert(config.source.bert_config()))
    self.context = context
    bm25_settings = config.pairs.bm25.settings
    self.analyzer = dict(stemmer=bm25_settings.stemmer, stopwords=bm25_settings.stopwords)
    self.splitter = deepct_encode.word_splitter(self.tokenizer, self.analyzer)
    built = build_examples(config.pairs, self.store,
                           mining_searcher(config.pairs, self.store, self.tokenizer,
                                           config.source.bert), 0, context.seed)
    self.blocks, self.term_recall = self._relevant_blocks(built.examples)
    logging.info("deepct: %d training blocks from %d queries (%d without a positive dropped)",
                 len(self.blocks), len(built.examples), built.num_dropped)
    self.eval_examples = config.evaluation.examples()
    self.model = deepct.TermWeighter(self.config.deepct, jnp.dtype(context.dtype),
                                     context.remat)

  def _relevant_blocks(self, examples) -> tuple[np.ndarray, list[dict[str, float]]]:
    """The blocks that are some query's positive ([blocks] int64, ascending), and the query
    term recall of each over its queries."""
    query_terms = [set(self.splitter.text_terms(ids))
                   for ids in self.tokenizer.tokenize([e.question for e in examples])]
    queries_of: dict[int, list[set[str]]] = {}
    for example, terms in zip(examples, query_terms):
      queries_of.setdefault(example.positive, []).append(terms)
    blocks = np.array(sorted(queries_of), np.int64)
    return blocks, [query_term_recall(queries_of[int(block)]) for block in blocks]

  def run_model(self) -> dict[str, Any]:
    return runs.deepct_model(self.config.deepct, self.analyzer, self.tokenizer.fingerprint)

  @functools.cached_property
  def pretrained(self):
    """--bert's weights (None with --from_scratch)."""
    return self.config.source.pretrained()

  def init_params(self, rng: jax.Array) -> Any:
    return deepct.init_params(self.config.deepct, rng,
                              self.pretrained.params if self.pretrained else None)

  def train_batch(self, step: int, context: StepContext) -> DeepCTInputs:
    rows = question_indices(len(self.blocks), self.context.batch_size, seed=self.context.seed,
                            step=step)[context.rows]
    config = self.config.deepct
    inputs = self.store.encode(self.blocks[rows], max_length=config.block_length,
                               block_format=config.block_format)
    targets, mask = zip(*(word_targets(self.splitter.input_words(token_ids),
                                       self.term_recall[row], config.block_length)
                          for row, token_ids in zip(rows, inputs.token_ids)))
    return DeepCTInputs(inputs, np.stack(targets), np.stack(mask))

  def loss(self, params, batch: DeepCTInputs, rng, deterministic: bool):
    weights = self.model.apply({"params": params}, batch.blocks, deterministic,
                               rngs={"dropout": rng})  # [batch, length]
    loss = deepct.masked_mse(weights, batch.targets, batch.mask)
    words = jnp.maximum(jnp.sum(batch.mask), 1.0)
    relevant = batch.mask * (batch.targets > 0)
    return loss, dict(
        loss=loss, words=jnp.sum(batch.mask),
        # How well the weights single out the words that queries use.
        mean_weight=jnp.sum(batch.mask * weights) / words,
        mean_weight_of_query_words=jnp.sum(relevant * weights) / jnp.maximum(
            jnp.sum(relevant), 1.0))

  def loss_weight(self, batch: DeepCTInputs) -> jax.Array:
    return jnp.sum(batch.mask)

  def evaluate(self, params, mesh, index=None) -> dict[str, float]:
    """Answer recall@k of the held-out questions over the store rewritten with `params`."""
    del index  # its index is BM25's, rewritten here
    if not self.eval_examples:
      return {}
    rewrite = self.config.rewrite
    blocks_terms = deepct_encode.rewrite_blocks(
        self.store, self.splitter, self.config.deepct, params, scale=rewrite.scale,
        dtype=jnp.dtype(self.context.dtype), mesh=mesh)
    rewritten = RewrittenBM25.build(blocks_terms, k1=rewrite.k1, b=rewrite.b, description={})
    encode = functools.partial(deepct_encode.query_terms, tokenizer=self.tokenizer,
                               splitter=self.splitter)
    metrics = answer_recall_of_text_searcher(EncodedTextSearcher(encode, rewritten), self.store,
                                             self.eval_examples,
                                             self.config.evaluation.sorted_ks)
    metrics["terms_per_block"] = rewritten.num_terms / len(self.store)
    return metrics

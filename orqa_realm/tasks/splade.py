"""SPLADE training (Formal et al. 2021): learned sparse term weights, trained as DPR trains a
dense retriever and kept sparse by the FLOPS regulariser.

    python -m orqa_realm.train --flagfile=configs/splade_squad.cfg

Each step takes DPR's batch (`batch_size` training questions, each with its positive block and
`--hard_negatives_per_question` mined negatives; the other questions' blocks are in-batch
negatives) and encodes queries and blocks into [vocab] term-weight vectors
(`modeling/splade.py`); the loss is the in-batch softmax of their dot products plus
`--splade_query_flops` x FLOPS(queries) + `--splade_block_flops` x FLOPS(blocks). The model is
--bert with its masked-LM head (a `BertForMaskedLM`, e.g. `bert_tiny_splade`; a BERT without one
gets a fresh head on its tied word embeddings). Each evaluation encodes the store into a sparse
index with the current weights and logs the held-out questions' answer recall@k, and the
postings per block that a search reads.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from orqa_realm.core.config import check_minimum, nested, setting
from orqa_realm.data.qa import QAEvaluation, question_indices
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.encode import runs
from orqa_realm.encode import sparse as sparse_encode
from orqa_realm.index.searcher import EncodedTextSearcher
from orqa_realm.index.sparse import SparseIndex
from orqa_realm.modeling import mlm, splade
from orqa_realm.modeling.losses import in_batch_softmax_loss
from orqa_realm.tasks.base import StepContext, Task, TaskContext
from orqa_realm.tasks.common import StoreAndBert, with_store_path
from orqa_realm.tasks.dpr import batch_blocks
from orqa_realm.tasks.pairs import TrainingPairs, build_examples, mining_searcher
from orqa_realm.tasks.retrieval_eval import answer_recall_of_text_searcher


class SpladeInputs(NamedTuple):
  queries: TokenBatch  # [batch, query_length]
  blocks: TokenBatch  # [batch x (1 + hard negatives), block_length]: per question, its positive
  # then its negatives
  block_ids: np.ndarray  # [batch x (1 + hard negatives)] int32 store index of each block row


@dataclasses.dataclass(frozen=True)
class SpladeTaskConfig:
  """The settings of SPLADE training."""
  source: StoreAndBert = nested(StoreAndBert())
  splade: splade.SpladeConfig = nested(splade.SpladeConfig())
  pairs: TrainingPairs = nested(TrainingPairs())
  hard_negatives_per_question: int = setting(
      1, "Hard negatives per question (mined by --negatives_retrieval), besides the in-batch "
      "negatives.")
  query_flops: float = setting(
      3e-4, "Weight of the queries' FLOPS regulariser (SPLADE v2's lambda_q).",
      flag="splade_query_flops")
  block_flops: float = setting(
      1e-4, "Weight of the blocks' FLOPS regulariser (SPLADE v2's lambda_d).",
      flag="splade_block_flops")
  evaluation: QAEvaluation = nested(QAEvaluation())

  def __post_init__(self):
    check_minimum("hard_negatives_per_question", self.hard_negatives_per_question, 0)
    check_minimum("splade_query_flops", self.query_flops, 0.0)
    check_minimum("splade_block_flops", self.block_flops, 0.0)


class SpladeTask(Task):
  name = "splade"
  config_class = SpladeTaskConfig
  trains_block_tower = False  # its index is sparse: the dense refresher has nothing to embed

  def __init__(self, config: SpladeTaskConfig, context: TaskContext):
    config.pairs.check()
    self.store, self.tokenizer = config.source.open_store()
    self.config = dataclasses.replace(
        with_store_path(config, self.store),
        splade=config.splade.with_bert(config.source.bert_config()))
    self.context = context
    searcher = mining_searcher(config.pairs, self.store, self.tokenizer, config.source.bert)
    built = build_examples(config.pairs, self.store, searcher,
                           config.hard_negatives_per_question, context.seed)
    logging.info("splade: %d training examples (%d questions without a positive dropped)",
                 len(built.examples), built.num_dropped)
    self.examples = built.examples
    self.question_ids = self.tokenizer.tokenize([example.question for example in self.examples])
    self.eval_examples = config.evaluation.examples()
    self.model = mlm.KnowledgeAugmentedEncoder(self.config.splade.encoder,
                                               jnp.dtype(context.dtype), context.remat)

  def run_model(self) -> dict[str, Any]:
    return runs.splade_model(self.config.splade, self.tokenizer.fingerprint)

  @functools.cached_property
  def pretrained(self):
    """--bert's weights and MLM head (None with --from_scratch)."""
    return self.config.source.pretrained()

  def init_params(self, rng: jax.Array) -> Any:
    return mlm.pretrained_init_params(self.config.splade.encoder, rng, self.pretrained,
                                      self.config.source.bert_dir())

  def train_batch(self, step: int, context: StepContext) -> SpladeInputs:
    indices = question_indices(len(self.examples), self.context.batch_size,
                               seed=self.context.seed, step=step)[context.rows]
    config = self.config.splade
    queries = self.tokenizer.pack([self.question_ids[index] for index in indices],
                                  max_length=config.query_length)
    block_ids = batch_blocks([self.examples[index] for index in indices])
    blocks = self.store.encode(block_ids, max_length=config.block_length,
                               block_format=config.block_format)
    return SpladeInputs(queries, blocks, block_ids)

  def loss(self, params, batch: SpladeInputs, rng, deterministic: bool):
    query_rng, block_rng = jax.random.split(rng)
    queries = splade.term_weights(self.model, params, batch.queries, deterministic,
                                  query_rng)  # [batch, vocab]
    blocks = splade.term_weights(self.model, params, batch.blocks, deterministic,
                                 block_rng)  # [batch x (1 + negatives), vocab]
    ranking = in_batch_softmax_loss(queries, blocks, 1.0, batch.block_ids)
    query_flops, block_flops = (splade.flops_regularizer(queries),
                                splade.flops_regularizer(blocks))
    loss = (ranking.loss + self.config.query_flops * query_flops
            + self.config.block_flops * block_flops)
    return loss, dict(loss=loss, ranking_loss=ranking.loss, accuracy=ranking.accuracy,
                      query_flops=query_flops, block_flops=block_flops,
                      query_terms=jnp.mean(jnp.sum(queries > 0, axis=-1)),
                      block_terms=jnp.mean(jnp.sum(blocks > 0, axis=-1)))

  def evaluate(self, params, mesh, index=None) -> dict[str, float]:
    """Answer recall@k of the held-out questions over the store encoded with `params`."""
    del index  # its index is sparse, encoded here
    if not self.eval_examples:
      return {}
    model = sparse_encode.SpladeModel(self.config.splade, params, self.tokenizer.fingerprint,
                                      {})
    blocks = sparse_encode.encode_blocks(self.store, model, mesh=mesh,
                                         dtype=jnp.dtype(self.context.dtype))
    sparse_index = SparseIndex(blocks, dict(size=blocks.shape[1]), {})
    encode = functools.partial(sparse_encode.encode_queries, tokenizer=self.tokenizer, model=model,
                               mesh=mesh, dtype=jnp.dtype(self.context.dtype))
    metrics = answer_recall_of_text_searcher(EncodedTextSearcher(encode, sparse_index),
                                             self.store, self.eval_examples,
                                             self.config.evaluation.sorted_ks)
    metrics["postings_per_block"] = sparse_index.num_postings / len(self.store)
    return metrics

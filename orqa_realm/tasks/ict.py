"""The Inverse Cloze Task (ORQA): pretrain the retriever to find a sentence's own block.

Loss: softmax over the global batch of blocks, each query's positive being its own block. Blocks
held out of training (`heldout_fraction`) give the evaluation batches. Optionally each evaluation
also reports answer recall@k on a QA set over the whole block store, every block embedded by the
current model (exact search): whether pretraining is helping retrieval.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from orqa_realm.core.config import nested, setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.ict import ICTSampler, TooFewExamples
from orqa_realm.data.qa import QAEvaluation
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.modeling import retriever
from orqa_realm.modeling.losses import in_batch_softmax_loss
from orqa_realm.tasks.base import StepContext, TaskContext
from orqa_realm.tasks.common import DualEncoderTask, StoreAndBert


class ICTInputs(NamedTuple):
  queries: TokenBatch  # [batch, query_length]
  blocks: TokenBatch  # [batch, block_length]


@dataclasses.dataclass(frozen=True)
class ICTConfig:
  """The settings of ICT pretraining."""
  source: StoreAndBert = nested(StoreAndBert())
  retriever: retriever.RetrieverConfig = nested(retriever.RetrieverConfig())
  remove_prob: float = setting(
      0.9, "Probability that the query sentence is removed from its block.",
      flag="ict_remove_prob")
  heldout_fraction: float = setting(
      0.05, "Fraction of blocks held out of ICT training for evaluation.",
      flag="ict_heldout_fraction")
  eval_batches: int = setting(
      4, "Held-out ICT batches (of the training batch size) per evaluation.",
      flag="ict_eval_batches")
  # Answer recall@k over the whole store costs one embedding of the store per evaluation.
  evaluation: QAEvaluation = nested(QAEvaluation(questions=300))


def split_blocks(num_blocks: int, heldout_fraction: float,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(training blocks, held-out blocks), a seeded random split."""
  order = np.random.default_rng([seed, 1 << 20]).permutation(num_blocks)
  num_heldout = int(round(num_blocks * heldout_fraction))
  return np.sort(order[num_heldout:]), np.sort(order[:num_heldout])


class ICTTask(DualEncoderTask):
  name = "ict"
  config_class = ICTConfig

  def __init__(self, config: ICTConfig, context: TaskContext):
    super().__init__(config, context)
    retriever_config = self.config.retriever
    train_blocks, self.heldout_blocks = split_blocks(len(self.store), config.heldout_fraction,
                                                     context.seed)
    sampler = lambda blocks, seed: ICTSampler(
        self.store, batch_size=context.batch_size, query_length=retriever_config.query_length,
        block_length=retriever_config.block_length, remove_prob=config.remove_prob, seed=seed,
        candidate_blocks=blocks, block_format=retriever_config.block_format)
    try:
      self.train_sampler = sampler(train_blocks, context.seed)
    except TooFewExamples as e:
      raise InputError(f"{e}: the block store is too small for this batch; pass a smaller "
                       "--batch_size or a larger --block_store", path=self.store.directory) from e
    try:
      self.eval_sampler = (sampler(self.heldout_blocks, context.seed + 1)
                           if config.eval_batches and len(self.heldout_blocks) else None)
    except TooFewExamples as e:
      # Examples grow with the held-out blocks: enough blocks for one batch, as a fraction.
      blocks_needed = e.batch_size * e.num_blocks / max(e.num_examples, 1)
      needed = math.ceil(100 * blocks_needed / len(self.store)) / 100
      fraction = (f"--ict_heldout_fraction={needed} or more, or " if needed <= 0.5 else "")
      raise InputError(f"the held-out split ({e}) cannot fill an evaluation batch: pass "
                       f"{fraction}--ict_eval_batches=0 (no held-out ICT loss), or a smaller "
                       "--batch_size", path=self.store.directory,
                       field="ict_heldout_fraction") from e

  def train_batch(self, step: int, context: StepContext) -> ICTInputs:
    batch = self.train_sampler.batch(step, context.rows)  # a function of the step alone
    return ICTInputs(batch.queries, batch.blocks)

  def loss(self, params, batch: ICTInputs, rng, deterministic: bool):
    query_embeddings, block_embeddings = self.model.apply(
        {"params": params}, batch.queries, batch.blocks, deterministic, rngs={"dropout": rng})
    result = in_batch_softmax_loss(query_embeddings, block_embeddings,
                                   self.config.retriever.score_scale)
    return result.loss, {"loss": result.loss, "accuracy": result.accuracy}

  def eval_batches(self) -> Iterator[ICTInputs]:
    if self.eval_sampler is None:
      return
    for step in range(self.config.eval_batches):
      batch = self.eval_sampler.batch(step)
      yield ICTInputs(batch.queries, batch.blocks)

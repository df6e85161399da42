"""Label-free contrastive pretraining of the retriever from its block store alone: Contriever
(independent crops with word deletion) and SimCSE (the same text twice, differing by dropout).

Both train one shared encoder (`--share_encoders`, the default here) with the in-batch softmax
over the global batch, each query view's positive being the key view of its own block; blocks
held out of training (`heldout_fraction`) give the evaluation batches, and each evaluation may
report answer recall@k on a QA set over the whole store, as ICT's does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import NamedTuple

from orqa_realm.core.config import nested, setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.contrastive import ContrastiveSampler, ViewSettings
from orqa_realm.data.qa import QAEvaluation
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.modeling import retriever
from orqa_realm.modeling.losses import in_batch_softmax_loss
from orqa_realm.tasks.base import StepContext, TaskContext
from orqa_realm.tasks.common import DualEncoderTask, StoreAndBert
from orqa_realm.tasks.ict import split_blocks

# The papers' encoders: one BERT, mean-pooled (Contriever) without a projection; the inverse
# temperature of Contriever's 0.05.
CONTRASTIVE_RETRIEVER = retriever.RetrieverConfig(
    projection_size=0, pooling="mean", share_encoders=True, query_length=128, block_length=128,
    score_scale=20.0)


def check_heldout_fraction(fraction: float) -> None:
  if not 0.0 <= fraction < 1.0:
    raise InputError(f"must be in [0, 1), not {fraction}", field="contrastive_heldout_fraction")


class ContrastiveInputs(NamedTuple):
  queries: TokenBatch  # [batch, query_length]
  keys: TokenBatch  # [batch, block_length]


@dataclasses.dataclass(frozen=True)
class ContrieverConfig:
  """The settings of Contriever pretraining."""
  source: StoreAndBert = nested(StoreAndBert())
  retriever: retriever.RetrieverConfig = nested(CONTRASTIVE_RETRIEVER)
  min_crop_ratio: float = setting(
      0.1, "Shortest crop of a block, as a fraction of its wordpieces.",
      flag="contriever_min_crop_ratio")
  max_crop_ratio: float = setting(
      0.5, "Longest crop of a block, as a fraction of its wordpieces.",
      flag="contriever_max_crop_ratio")
  delete_prob: float = setting(
      0.1, "Probability of deleting each wordpiece of a crop.", flag="contriever_delete_prob")
  heldout_fraction: float = setting(
      0.05, "Fraction of blocks held out of training for evaluation.",
      flag="contrastive_heldout_fraction")
  eval_batches: int = setting(
      4, "Held-out batches (of the training batch size) per evaluation.",
      flag="contrastive_eval_batches")
  evaluation: QAEvaluation = nested(QAEvaluation(questions=300))

  def __post_init__(self):
    for name in ("min_crop_ratio", "max_crop_ratio", "delete_prob"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise InputError(f"must be in [0, 1], not {getattr(self, name)}",
                         field=f"contriever_{name}")
    if self.min_crop_ratio > self.max_crop_ratio:
      raise InputError(f"exceeds --contriever_max_crop_ratio={self.max_crop_ratio}",
                       field="contriever_min_crop_ratio")
    check_heldout_fraction(self.heldout_fraction)

  def views(self) -> tuple[ViewSettings, bool]:
    """(how a view is drawn, whether the two are drawn independently)."""
    return ViewSettings(self.min_crop_ratio, self.max_crop_ratio, self.delete_prob), True


@dataclasses.dataclass(frozen=True)
class SimCSEConfig:
  """The settings of SimCSE pretraining."""
  source: StoreAndBert = nested(StoreAndBert())
  retriever: retriever.RetrieverConfig = nested(CONTRASTIVE_RETRIEVER)
  heldout_fraction: float = setting(
      0.05, "Fraction of blocks held out of training for evaluation.",
      flag="contrastive_heldout_fraction")
  eval_batches: int = setting(
      4, "Held-out batches (of the training batch size) per evaluation.",
      flag="contrastive_eval_batches")
  evaluation: QAEvaluation = nested(QAEvaluation(questions=300))

  def __post_init__(self):
    check_heldout_fraction(self.heldout_fraction)

  def views(self) -> tuple[ViewSettings, bool]:
    """The whole block (up to the shorter of the two lengths), the same text as both views."""
    return ViewSettings(1.0, 1.0, 0.0), False


class ContrastiveTask(DualEncoderTask):
  """What Contriever and SimCSE share: the sampler of view pairs, the in-batch loss, held-out
  batches. A subclass names itself and its config, whose `views()` says how pairs are drawn."""

  def __init__(self, config, context: TaskContext):
    super().__init__(config, context)
    train_blocks, self.heldout_blocks = split_blocks(len(self.store), config.heldout_fraction,
                                                     context.seed)
    settings, independent = config.views()
    retriever_config = self.config.retriever
    sampler = lambda blocks, seed: ContrastiveSampler(
        self.store, batch_size=context.batch_size, settings=settings, independent=independent,
        query_length=retriever_config.query_length, key_length=retriever_config.block_length,
        seed=seed, candidate_blocks=blocks)
    try:
      self.train_sampler = sampler(train_blocks, context.seed)
      self.eval_sampler = (sampler(self.heldout_blocks, context.seed + 1)
                           if config.eval_batches and len(self.heldout_blocks) else None)
    except ValueError as e:
      raise InputError(f"{e}: pass a smaller --batch_size, a larger --block_store, or (for the "
                       "held-out split) --contrastive_eval_batches=0",
                       path=self.store.directory) from e

  def train_batch(self, step: int, context: StepContext) -> ContrastiveInputs:
    batch = self.train_sampler.batch(step, context.rows)  # a function of the step alone
    return ContrastiveInputs(batch.queries, batch.keys)

  def loss(self, params, batch: ContrastiveInputs, rng, deterministic: bool):
    query_embeddings, key_embeddings = self.model.apply(
        {"params": params}, batch.queries, batch.keys, deterministic, rngs={"dropout": rng})
    result = in_batch_softmax_loss(query_embeddings, key_embeddings,
                                   self.config.retriever.score_scale)
    return result.loss, {"loss": result.loss, "accuracy": result.accuracy}

  def eval_batches(self) -> Iterator[ContrastiveInputs]:
    if self.eval_sampler is None:
      return
    for step in range(self.config.eval_batches):
      batch = self.eval_sampler.batch(step)
      yield ContrastiveInputs(batch.queries, batch.keys)


class ContrieverTask(ContrastiveTask):
  name = "contriever"
  config_class = ContrieverConfig


class SimCSETask(ContrastiveTask):
  name = "simcse"
  config_class = SimCSEConfig

"""Label-free contrastive pretraining of the retriever from its block store alone: Contriever
(independent crops with word deletion) and SimCSE (the same text twice, differing by dropout).

Both train one shared encoder (`--share_encoders`, the default here) with the in-batch softmax
over the global batch, each query view's positive being the key view of its own block; Contriever
also as MoCo (`--moco_queue_size`), with keys from a momentum copy of the encoder and a queue of
past batches' keys as the negatives, the two kept in the checkpointed train state; blocks
held out of training (`heldout_fraction`) give the evaluation batches, and each evaluation may
report answer recall@k on a QA set over the whole store, as ICT's does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

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
  moco_queue_size: int = setting(
      0, "MoCo: keys of past batches kept (a multiple of --batch_size) as the negatives, each "
      "step's keys from a momentum copy of the encoder; 0: in-batch negatives, one encoder.")
  moco_momentum: float = setting(
      0.999, "MoCo: the key encoder's parameters move to m x theirs + (1 - m) x the encoder's "
      "before each step.")
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
    if self.moco_queue_size < 0:
      raise InputError(f"must be at least 0, not {self.moco_queue_size}", field="moco_queue_size")
    if not 0.0 <= self.moco_momentum < 1.0:
      raise InputError(f"must be in [0, 1), not {self.moco_momentum}", field="moco_momentum")
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


class MoCoState(NamedTuple):
  """MoCo's state between steps (He et al. 2020, as Contriever uses it)."""
  key_params: Any  # the momentum encoder: the retriever's params, averaged
  # [queue_size, dim] float32: keys of past batches, the oldest overwritten first; random unit
  # vectors at the start, as in MoCo's and Contriever's code, so that step 1 has negatives.
  queue: jax.Array
  position: jax.Array  # [] int32 where the next batch's keys go


def moco_loss(queries: jax.Array, keys: jax.Array, queue: jax.Array,
              score_scale: float) -> tuple[jax.Array, jax.Array]:
  """MoCo's loss: each query's softmax over its own key and the queue's keys.

  Args:
    queries: [batch, dim]; keys: [batch, dim], row i query i's positive; queue: [size, dim].
  Returns:
    (mean loss, accuracy: the share of queries whose own key scores highest).
  """
  positive = score_scale * jnp.sum(queries * keys, axis=-1, keepdims=True)  # [batch, 1]
  negatives = score_scale * jnp.einsum("bd,qd->bq", queries, queue)  # [batch, size]
  logits = jnp.concatenate([positive, negatives], axis=1)
  loss = -jax.nn.log_softmax(logits, axis=1)[:, 0].mean()
  return loss, (jnp.argmax(logits, axis=1) == 0).mean()


class ContrieverTask(ContrastiveTask):
  """Contriever, in-batch or (with `moco_queue_size`) MoCo."""
  name = "contriever"
  config_class = ContrieverConfig

  def __init__(self, config: ContrieverConfig, context: TaskContext):
    if config.moco_queue_size % context.batch_size:
      raise InputError(f"--moco_queue_size={config.moco_queue_size} is not a multiple of "
                       f"--batch_size={context.batch_size}", field="moco_queue_size")
    super().__init__(config, context)

  def init_task_state(self, params) -> MoCoState | None:
    if not self.config.moco_queue_size:
      return None
    retriever_config = self.config.retriever
    dim = retriever_config.projection_size or retriever_config.bert.hidden_size
    queue = jax.random.normal(jax.random.key(self.context.seed),
                              (self.config.moco_queue_size, dim), jnp.float32)
    return MoCoState(key_params=jax.tree.map(jnp.copy, params),
                     queue=queue / jnp.linalg.norm(queue, axis=1, keepdims=True),
                     position=jnp.zeros((), jnp.int32))

  def stateful_loss(self, params, task_state: MoCoState, batch: ContrastiveInputs, rng):
    momentum = self.config.moco_momentum
    key_params = jax.tree.map(lambda key, value: momentum * key
                              + (1.0 - momentum) * jax.lax.stop_gradient(value),
                              task_state.key_params, params)
    query_rng, key_rng = jax.random.split(rng)
    queries = self.model.apply({"params": params}, batch.queries, False,
                               method=self.model.embed_queries, rngs={"dropout": query_rng})
    keys = jax.lax.stop_gradient(self.model.apply(
        {"params": key_params}, batch.keys, False, method=self.model.embed_blocks,
        rngs={"dropout": key_rng}))  # [batch, dim]
    loss, accuracy = moco_loss(queries, keys, task_state.queue,
                               self.config.retriever.score_scale)
    size, batch_size = task_state.queue.shape[0], keys.shape[0]
    queue = jax.lax.dynamic_update_slice(task_state.queue, keys, (task_state.position, 0))
    state = MoCoState(key_params, queue, (task_state.position + batch_size) % size)
    return loss, ({"loss": loss, "accuracy": accuracy}, state)


class SimCSETask(ContrastiveTask):
  name = "simcse"
  config_class = SimCSEConfig

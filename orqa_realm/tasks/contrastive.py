"""Label-free contrastive pretraining of the retriever from its block store alone: Contriever
(independent crops with word deletion) and SimCSE (the same text twice, differing by dropout).

Both train one shared encoder (`--share_encoders`, the default here) with the in-batch softmax
over the global batch, each query view's positive being the key view of its own block; Contriever
also as MoCo (`--moco_queue_size`), with keys from a momentum copy of the encoder and a queue of
past batches' keys as the negatives, the two kept in the checkpointed train state. The part
every label-free pretraining task shares (`PretrainingTask`, Spider's too): blocks held out of
training give the evaluation batches, and each evaluation may report answer recall@k on a QA
set over the whole store, as ICT's does.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

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


@dataclasses.dataclass(frozen=True)
class HeldOutBlocks:
  """The blocks a pretraining task keeps out of training, and how many batches of them each
  evaluation reports the loss and accuracy on."""
  fraction: float = setting(
      0.05, "Fraction of blocks held out of training for evaluation.",
      flag="contrastive_heldout_fraction")
  batches: int = setting(
      4, "Held-out batches (of the training batch size) per evaluation.",
      flag="contrastive_eval_batches")

  def __post_init__(self):
    if not 0.0 <= self.fraction < 1.0:
      raise InputError(f"must be in [0, 1), not {self.fraction}",
                       field="contrastive_heldout_fraction")


class PretrainingInputs(NamedTuple):
  queries: TokenBatch  # [batch, query_length]
  blocks: TokenBatch  # [batch x g, block_length]: each query's positive, then g - 1 negatives
  block_ids: np.ndarray  # [batch x g] int64, the store's block each row comes from


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
  held_out: HeldOutBlocks = nested(HeldOutBlocks())
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

  def views(self) -> tuple[ViewSettings, bool]:
    """(how a view is drawn, whether the two are drawn independently)."""
    return ViewSettings(self.min_crop_ratio, self.max_crop_ratio, self.delete_prob), True


@dataclasses.dataclass(frozen=True)
class SimCSEConfig:
  """The settings of SimCSE pretraining."""
  source: StoreAndBert = nested(StoreAndBert())
  retriever: retriever.RetrieverConfig = nested(CONTRASTIVE_RETRIEVER)
  held_out: HeldOutBlocks = nested(HeldOutBlocks())
  evaluation: QAEvaluation = nested(QAEvaluation(questions=300))

  def views(self) -> tuple[ViewSettings, bool]:
    """The whole block (up to the shorter of the two lengths), the same text as both views."""
    return ViewSettings(1.0, 1.0, 0.0), False


class PretrainingTask(DualEncoderTask):
  """What the label-free pretraining tasks share: a sampler of (query, blocks) batches over the
  training blocks and one over the held-out blocks (`config.held_out`), and DPR's in-batch
  softmax over each query's positive and negatives, a copy of its positive elsewhere in the
  batch not counted as a negative. A subclass says how batches are drawn (`make_sampler`,
  `inputs`)."""

  def __init__(self, config, context: TaskContext):
    super().__init__(config, context)
    train_blocks, self.heldout_blocks = split_blocks(len(self.store), config.held_out.fraction,
                                                     context.seed)
    try:
      self.train_sampler = self.make_sampler(train_blocks, context.seed)
      self.eval_sampler = (self.make_sampler(self.heldout_blocks, context.seed + 1)
                           if config.held_out.batches and len(self.heldout_blocks) else None)
    except ValueError as e:
      raise InputError(f"{e}: pass a smaller --batch_size, a larger --block_store, or (for the "
                       "held-out split) --contrastive_eval_batches=0",
                       path=self.store.directory) from e

  @abc.abstractmethod
  def make_sampler(self, blocks: np.ndarray, seed: int) -> Any:
    """A sampler of global batches (`batch(step, rows)`) drawn from `blocks`."""

  @abc.abstractmethod
  def inputs(self, batch: Any) -> PretrainingInputs:
    """The loss's inputs from one of the sampler's batches."""

  def train_batch(self, step: int, context: StepContext) -> PretrainingInputs:
    return self.inputs(self.train_sampler.batch(step, context.rows))  # a function of the step

  def loss(self, params, batch: PretrainingInputs, rng, deterministic: bool):
    query_embeddings, block_embeddings = self.model.apply(
        {"params": params}, batch.queries, batch.blocks, deterministic, rngs={"dropout": rng})
    result = in_batch_softmax_loss(query_embeddings, block_embeddings,
                                   self.config.retriever.score_scale, batch.block_ids)
    return result.loss, {"loss": result.loss, "accuracy": result.accuracy}

  def eval_batches(self) -> Iterator[PretrainingInputs]:
    if self.eval_sampler is None:
      return
    for step in range(self.config.held_out.batches):
      yield self.inputs(self.eval_sampler.batch(step))


class ContrastiveTask(PretrainingTask):
  """Contriever's and SimCSE's pairs: two views of one block, whose config's `views()` says how
  they are drawn."""

  def make_sampler(self, blocks: np.ndarray, seed: int) -> ContrastiveSampler:
    settings, independent = self.config.views()
    return ContrastiveSampler(
        self.store, batch_size=self.context.batch_size, settings=settings,
        independent=independent, query_length=self.config.retriever.query_length,
        key_length=self.config.retriever.block_length, seed=seed, candidate_blocks=blocks)

  def inputs(self, batch) -> PretrainingInputs:
    return PretrainingInputs(batch.queries, batch.keys, batch.block_indices)


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

  def stateful_loss(self, params, task_state: MoCoState, batch: PretrainingInputs, rng):
    momentum = self.config.moco_momentum
    key_params = jax.tree.map(lambda key, value: momentum * key
                              + (1.0 - momentum) * jax.lax.stop_gradient(value),
                              task_state.key_params, params)
    query_rng, key_rng = jax.random.split(rng)
    queries = self.model.apply({"params": params}, batch.queries, False,
                               method=self.model.embed_queries, rngs={"dropout": query_rng})
    keys = jax.lax.stop_gradient(self.model.apply(
        {"params": key_params}, batch.blocks, False, method=self.model.embed_blocks,
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

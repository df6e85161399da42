"""Distillation of a cross-encoder into the dual encoder: the student's scaled q . d of each
training query's candidates (its positive and `--hard_negatives_per_question` mined negatives,
as DPR's) learns the teacher's scores of the same pairs.

    python -m orqa_realm.train --flagfile=configs/distill_squad.cfg

`--distill_loss`:
  * `margin_mse` (Hofstaetter et al. 2020): MSE between the student's and the teacher's margins
    s(q, p+) - s(q, p-), over every (positive, negative) pair of the query;
  * `listwise_kl` (ColBERTv2): KL(teacher softmax || student softmax) over the query's
    candidate list (`--distill_temperature` divides the teacher's scores); RocketQAv2's joint
    version, where the teacher learns too, is `tasks/rocketqa.py`.
`--distill_in_batch_weight` adds DPR's in-batch softmax (the batch's other blocks as negatives)
with that weight. The teacher's scores are computed once per run (`--teacher_scores` caches
them across runs) by `tasks/teacher.py`, which also denoises the mined negatives with
`--denoise_margin` (RocketQA). The student's scores are scaled by `--retrieval_score_scale`
(about 20 for a cosine retriever), so that they live on the teacher's logit scale.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

import jax.numpy as jnp
import numpy as np

from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.modeling.losses import in_batch_softmax_loss
from orqa_realm.modeling.ranking_losses import listwise_kl, margin_mse
from orqa_realm.tasks.base import StepContext, TaskContext
from orqa_realm.tasks.dpr import DPRConfig, DPRTask

DistillLoss = Literal["margin_mse", "listwise_kl"]


class DistillInputs(NamedTuple):
  queries: TokenBatch  # [batch, query_length]
  blocks: TokenBatch  # [batch x (1 + negatives), block_length]: per query, positive, negatives
  block_ids: np.ndarray  # [batch x (1 + negatives)] int32
  teacher_scores: np.ndarray  # [batch, 1 + negatives] float32, in the blocks' order


@dataclasses.dataclass(frozen=True)
class DistillConfig(DPRConfig):
  """DPR's settings, a teacher (required), and the distillation loss."""
  hard_negatives_per_question: int = setting(
      7, "Mined negatives per query whose teacher scores the student learns.")
  loss: DistillLoss = setting("margin_mse", "What the student learns of the teacher's scores.",
                              flag="distill_loss")
  temperature: float = setting(1.0, "Divides the teacher's scores before listwise_kl's softmax.",
                               flag="distill_temperature")
  in_batch_weight: float = setting(
      0.0, "Weight of DPR's in-batch softmax loss added to the distillation loss.",
      flag="distill_in_batch_weight")


def student_scores(query_embeddings, block_embeddings, score_scale: float):
  """[batch, 1 + n] scaled q . d of each query with its own candidates (the block rows come
  query by query)."""
  num_queries, dim = query_embeddings.shape
  candidates = block_embeddings.reshape(num_queries, -1, dim)  # [batch, 1 + n, dim]
  return score_scale * jnp.einsum("qd,qcd->qc", query_embeddings, candidates,
                                  preferred_element_type=jnp.float32)


class DistillTask(DPRTask):
  name = "distill"
  config_class = DistillConfig
  learns_from_teacher = True

  def __init__(self, config: DistillConfig, context: TaskContext):
    if config.hard_negatives_per_question < 1:
      raise InputError("distillation needs at least one negative per query",
                       field="hard_negatives_per_question")
    super().__init__(config, context)

  def train_batch(self, step: int, context: StepContext) -> DistillInputs:
    indices, examples = self.step_examples(step, context.rows)
    inputs = self.inputs(self.query_tokens(indices), examples)
    return DistillInputs(*inputs, teacher_scores=self.teacher_scores[indices])

  def loss(self, params, batch: DistillInputs, rng, deterministic: bool):
    config = self.config
    query_embeddings, block_embeddings = self.embed(params, batch.queries, batch.blocks, rng,
                                                    deterministic)
    student = student_scores(query_embeddings, block_embeddings, config.retriever.score_scale)
    if config.loss == "margin_mse":
      distill = margin_mse(student, batch.teacher_scores)
    else:
      distill = listwise_kl(student, batch.teacher_scores,
                            teacher_temperature=config.temperature)
    in_batch = in_batch_softmax_loss(query_embeddings, block_embeddings,
                                     config.retriever.score_scale, batch.block_ids)
    loss = distill + config.in_batch_weight * in_batch.loss
    # Agreement with the teacher: the student ranks first the candidate the teacher does.
    agreement = jnp.mean(jnp.argmax(student, -1) == jnp.argmax(batch.teacher_scores, -1))
    return loss, {"loss": loss, "distill_loss": distill, "in_batch_loss": in_batch.loss,
                  "accuracy": jnp.mean(jnp.argmax(student, -1) == 0),
                  "teacher_agreement": agreement}

"""Ranking and distillation losses over each query's scored candidates.

Scores come as [queries, candidates] matrices: a student's (a dual encoder's scaled q . d) and,
for distillation, a teacher's (a cross-encoder's) over the same candidates. `valid` masks
candidates that must not count for a query (a copy of its positive, padding). Pure functions of
arrays, jitted inside a task's loss over the global batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _positive_scores(scores: jax.Array, positives: jax.Array) -> jax.Array:
  """[queries, 1] the score of each query's positive column."""
  return jnp.take_along_axis(scores, positives[:, None], axis=1)


def _pair_mask(valid: jax.Array | None, positives: jax.Array, shape) -> jax.Array:
  """[queries, candidates] float32: 1 on the (positive, negative) pairs that count."""
  columns = jnp.arange(shape[1])[None, :]
  mask = columns != positives[:, None]
  if valid is not None:
    mask = mask & valid
  return mask.astype(jnp.float32)


def margin_mse(student: jax.Array, teacher: jax.Array, positives: jax.Array | None = None,
               valid: jax.Array | None = None) -> jax.Array:
  """Margin-MSE (Hofstaetter et al. 2020): the mean over (query, negative) pairs of
  ((s(q, p+) - s(q, p-)) - (t(q, p+) - t(q, p-)))^2.

  Args:
    student, teacher: [queries, candidates] scores.
    positives: [queries] int column of each query's positive (default: column 0).
    valid: [queries, candidates] bool, the negatives that count (default: every other column).
  """
  student, teacher = student.astype(jnp.float32), teacher.astype(jnp.float32)
  if positives is None:
    positives = jnp.zeros(student.shape[0], jnp.int32)
  student_margins = _positive_scores(student, positives) - student  # [queries, candidates]
  teacher_margins = _positive_scores(teacher, positives) - teacher
  mask = _pair_mask(valid, positives, student.shape)
  return jnp.sum(mask * (student_margins - teacher_margins) ** 2) / jnp.maximum(mask.sum(), 1.0)


def listwise_kl(student: jax.Array, teacher: jax.Array, valid: jax.Array | None = None,
                teacher_temperature: float = 1.0) -> jax.Array:
  """KL(teacher softmax || student softmax) over each query's candidate list, averaged over
  queries (ColBERTv2's distillation). RocketQAv2's joint training takes KL(retriever ||
  ranker): this function with the ranker as `student` and the retriever as `teacher`, neither
  held fixed.

  Args:
    student, teacher: [queries, candidates] scores (logits of the two distributions).
    valid: [queries, candidates] bool, the candidates in each list (default: all).
    teacher_temperature: divides the teacher's scores before its softmax.
  """
  student = student.astype(jnp.float32)
  teacher = teacher.astype(jnp.float32) / teacher_temperature
  if valid is not None:
    floor = jnp.finfo(jnp.float32).min
    student, teacher = jnp.where(valid, student, floor), jnp.where(valid, teacher, floor)
  teacher_log_p = jax.nn.log_softmax(teacher, axis=-1)
  student_log_p = jax.nn.log_softmax(student, axis=-1)
  teacher_p = jnp.exp(teacher_log_p)
  # Masked candidates have p = 0 under the teacher: they add nothing (and no NaN).
  per_query = jnp.sum(jnp.where(teacher_p > 0, teacher_p * (teacher_log_p - student_log_p), 0.0),
                      axis=-1)
  return jnp.mean(per_query)


def ranknet(scores: jax.Array, weights: jax.Array, positives: jax.Array | None = None
            ) -> jax.Array:
  """RankNet's pairwise logistic loss, sum over (query, negative) pairs of
  w x log(1 + exp(-(s(q, p+) - s(q, p-)))) / sum of w (STAR with weights 1 and alpha; ADORE's
  LambdaLoss with weights |delta metric|).

  Args:
    scores: [queries, candidates].
    weights: [queries, candidates] float weight of each (positive, candidate) pair; the
      positive's own column is ignored.
    positives: [queries] int column of each query's positive (default: column 0).
  """
  scores = scores.astype(jnp.float32)
  if positives is None:
    positives = jnp.zeros(scores.shape[0], jnp.int32)
  weights = weights.astype(jnp.float32) * _pair_mask(None, positives, scores.shape)
  pair_losses = jax.nn.softplus(scores - _positive_scores(scores, positives))
  return jnp.sum(weights * pair_losses) / jnp.maximum(weights.sum(), 1e-9)


def reciprocal_rank_swap_weights(positive_ranks: jax.Array, negative_ranks: jax.Array,
                                 cutoff: int = 10) -> jax.Array:
  """ADORE's LambdaLoss weights for MRR@cutoff: |1/r(p+) - 1/r(p-)|, the change in the query's
  reciprocal rank if the positive and the negative swapped places (a rank past the cutoff, or
  not retrieved (0), counts 0).

  Args:
    positive_ranks: [queries] int 1-based rank of each positive in the current ranking, 0 when
      it is not in the retrieved list.
    negative_ranks: [queries, negatives] int 1-based ranks of the negatives.
  """
  def reciprocal(ranks):
    ranks = ranks.astype(jnp.float32)
    return jnp.where((ranks >= 1) & (ranks <= cutoff), 1.0 / jnp.maximum(ranks, 1.0), 0.0)

  return jnp.abs(reciprocal(positive_ranks)[:, None] - reciprocal(negative_ranks))

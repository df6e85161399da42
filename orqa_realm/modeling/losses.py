"""Pure loss functions over the global batch.

Written for arrays that `jax.jit` may shard over the ("data",) mesh: a loss over the global batch
is computed as if on one device, and the compiler inserts the collectives (e.g. gathering every
device's block embeddings for the in-batch softmax).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class RetrievalLoss(NamedTuple):
  loss: jax.Array  # [] mean negative log-likelihood of the positives
  accuracy: jax.Array  # [] fraction of queries whose positive scores highest


def in_batch_softmax_loss(query_embeddings: jax.Array, block_embeddings: jax.Array,
                          score_scale: float = 1.0,
                          block_ids: jax.Array | None = None) -> RetrievalLoss:
  """Softmax over all blocks of the batch (ICT, DPR) of the scaled inner products: see
  `in_batch_softmax_of_scores`.

  Args:
    query_embeddings: [num_queries, dim].
    block_embeddings: [num_queries x g, dim].
    score_scale: multiplies the scores (an inverse temperature; ~20 for cosine scores).
    block_ids: [num_queries x g] int, which corpus block each row is (None: all distinct).
  """
  logits = score_scale * jnp.einsum("qd,bd->qb", query_embeddings, block_embeddings,
                                    preferred_element_type=jnp.float32)  # [queries, blocks]
  return in_batch_softmax_of_scores(logits, block_ids)


def in_batch_softmax_of_scores(logits: jax.Array,
                               block_ids: jax.Array | None = None) -> RetrievalLoss:
  """Softmax over all blocks of the batch, given every query's score of every block (any
  retriever: inner products, MaxSim).

  The blocks come in one group per query, its positive first, then its hard negatives (DPR):
  query i's positive is block i x g, g = num_blocks / num_queries (1 for ICT). Every other
  block of the batch is a negative for it. Grouping by query keeps each query's blocks in the
  same rows of the batch as the query, so that a host can build its own rows alone.

  Args:
    logits: [num_queries, num_queries x g] float32 scores, already scaled.
    block_ids: [num_queries x g] int, which corpus block each row is. A row holding the same
      block as query i's positive (another question's positive from the same paragraph, or a
      negative that is that block) is left out of query i's softmax instead of counting as a
      negative for its own positive. None: every row is a distinct block.
  """
  num_queries, num_blocks = logits.shape
  if num_blocks < num_queries or num_blocks % num_queries:
    raise ValueError(f"{num_blocks} blocks for {num_queries} queries: every query needs its "
                     "positive block, and the same number of hard negatives")
  logits = logits.astype(jnp.float32)
  queries = jnp.arange(num_queries)
  positives = queries * (num_blocks // num_queries)  # [queries]
  if block_ids is not None:
    copies = ((block_ids[None, :] == block_ids[positives][:, None])
              & (jnp.arange(num_blocks)[None, :] != positives[:, None]))  # [queries, blocks]
    logits = jnp.where(copies, jnp.finfo(jnp.float32).min, logits)
  positive_logits = logits[queries, positives]  # [num_queries]
  loss = jnp.mean(jax.nn.logsumexp(logits, axis=-1) - positive_logits)
  accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == positives)
  return RetrievalLoss(loss=loss, accuracy=accuracy)


def listwise_softmax_loss(scores: jax.Array) -> RetrievalLoss:
  """Softmax cross-entropy over each query's candidate list, its positive first (a
  cross-encoder's listwise loss: one positive and n negatives per query).

  Args:
    scores: [num_queries, 1 + n] float32, column 0 the positive's score.
  """
  scores = scores.astype(jnp.float32)
  loss = jnp.mean(jax.nn.logsumexp(scores, axis=-1) - scores[:, 0])
  accuracy = jnp.mean(jnp.argmax(scores, axis=-1) == 0)
  return RetrievalLoss(loss=loss, accuracy=accuracy)


def marginal_log_likelihood(logits: jax.Array, correct: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Negative log of the probability mass on the correct candidates, one value per row.

  ORQA's marginal loss: logsumexp(all) - logsumexp(correct), zero for a row with no correct
  candidate (nothing to learn from it, and never an infinite loss).

  Args:
    logits: [batch, candidates] float.
    correct: [batch, candidates] bool.
  Returns:
    ([batch] losses, [batch] bool: whether the row had a correct candidate).
  """
  logits = logits.astype(jnp.float32)
  any_correct = jnp.any(correct, axis=-1)  # [batch]
  # A finite floor rather than -inf keeps the gradient of rows with nothing correct at zero
  # instead of NaN (jnp.where differentiates both branches).
  correct_logits = jnp.where(correct, logits, jnp.finfo(jnp.float32).min)
  losses = jax.nn.logsumexp(logits, axis=-1) - jax.nn.logsumexp(correct_logits, axis=-1)
  return jnp.where(any_correct, losses, 0.0), any_correct


class MarginalLoss(NamedTuple):
  loss: jax.Array  # [] mean over the batch's questions; questions with nothing correct count 0
  has_correct: jax.Array  # [] fraction of questions with at least one correct candidate


def early_loss(retrieval_logits: jax.Array, block_has_answer: jax.Array) -> MarginalLoss:
  """ORQA's early loss: marginal likelihood of the retrieved blocks that contain an answer.

  Args:
    retrieval_logits: [questions, c] question . block scores of the top c retrieved blocks.
    block_has_answer: [questions, c] bool.
  """
  losses, any_correct = marginal_log_likelihood(retrieval_logits, block_has_answer)
  return MarginalLoss(jnp.mean(losses), jnp.mean(any_correct))


def full_loss(span_logits: jax.Array, span_is_answer: jax.Array) -> MarginalLoss:
  """ORQA's full loss: marginal likelihood over every (block, span) of the reader's top k blocks
  whose text is an answer; span logits already include their block's retrieval logit.

  Args:
    span_logits: [questions, k, spans]; invalid spans (outside the block) must be masked to a
      large negative value by the caller.
    span_is_answer: [questions, k, spans] bool.
  """
  questions = span_logits.shape[0]
  losses, any_correct = marginal_log_likelihood(span_logits.reshape(questions, -1),
                                                span_is_answer.reshape(questions, -1))
  return MarginalLoss(jnp.mean(losses), jnp.mean(any_correct))


class REALMLoss(NamedTuple):
  loss: jax.Array  # [] negative marginal log-likelihood per masked wordpiece
  retrieval_utility: jax.Array  # [] mean of log p(y | top retrieved, x) - log p(y | null, x)
  null_probability: jax.Array  # [] mean p(null document | x)
  masked_accuracy: jax.Array  # [] masked wordpieces whose marginal prediction is right


class MaskedLMLoss(NamedTuple):
  loss: jax.Array  # [] mean negative log-likelihood over the masked wordpieces
  accuracy: jax.Array  # [] masked wordpieces whose most probable wordpiece is right


def masked_lm_loss(mlm_logits: jax.Array, targets: jax.Array,
                   target_mask: jax.Array) -> MaskedLMLoss:
  """BERT's masked-LM loss, over the batch's masked wordpieces (padding slots excluded).

  Args:
    mlm_logits: [batch, masks, vocab] logits at the masked positions.
    targets: [batch, masks] int the masked wordpieces.
    target_mask: [batch, masks] bool, False on padding slots.
  """
  weights = target_mask.astype(jnp.float32)  # [batch, masks]
  num_masks = jnp.maximum(jnp.sum(weights), 1.0)
  log_p = jax.nn.log_softmax(mlm_logits.astype(jnp.float32), axis=-1)  # [batch, masks, vocab]
  target_log_p = jnp.take_along_axis(log_p, targets[..., None].astype(jnp.int32),
                                     axis=-1)[..., 0]  # [batch, masks]
  correct = jnp.argmax(mlm_logits, axis=-1) == targets
  return MaskedLMLoss(loss=-jnp.sum(target_log_p * weights) / num_masks,
                      accuracy=jnp.sum(correct * weights) / num_masks)


class REALMQueryScores(NamedTuple):
  """Each query's masked wordpieces scored by the knowledge-augmented encoder."""
  log_likelihood: jax.Array  # [batch] log p(y | x), marginalised over the candidates
  null_log_likelihood: jax.Array  # [batch] log p(y | null document, x): no retrieval
  correct: jax.Array  # [batch] masked wordpieces whose marginal prediction is right
  null_correct: jax.Array  # [batch] ... predicted reading the null document alone
  num_masks: jax.Array  # [batch] float32 masked wordpieces (padding slots excluded)
  top_retrieved_log_likelihood: jax.Array  # [batch] log p(y | best-scored retrieved doc, x)
  null_probability: jax.Array  # [batch] p(null document | x)


def realm_query_scores(retrieval_logits: jax.Array, mlm_logits: jax.Array, targets: jax.Array,
                       target_mask: jax.Array, marginal: str = "token") -> REALMQueryScores:
  """REALM's likelihood of each query's masked wordpieces, marginalised over the candidates,
  and the same reading the null document (candidate 0) alone.

  log p(z | x) = log_softmax over the k candidates of the retrieval logits, and log p(y | z, x)
  the MLM's log-probabilities of the targets reading candidate z. With `marginal="token"` (the
  reference code) each masked wordpiece j is marginalised alone, log p(y_j | x) = logsumexp_z
  [log p(z | x) + log p(y_j | z, x)], and log p(y | x) sums them; with "span" (the paper) the
  span's wordpieces are multiplied first, log p(y | x) = logsumexp_z [log p(z | x) + sum_j log
  p(y_j | z, x)]. A prediction is the argmax of the marginal (token) distribution.

  Args:
    retrieval_logits: [batch, k] scores of the candidates; candidate 0 is the null document.
    mlm_logits: [batch, k, masks, vocab] the MLM's logits at the masked positions.
    targets: [batch, masks] int the masked wordpieces.
    target_mask: [batch, masks] bool, False on padding slots.
    marginal: "token" or "span".
  """
  if marginal not in ("token", "span"):
    raise ValueError(f"marginal {marginal!r} is not 'token' or 'span'")
  weights = target_mask.astype(jnp.float32)  # [batch, masks]
  log_p_z = jax.nn.log_softmax(retrieval_logits.astype(jnp.float32), axis=-1)  # [batch, k]
  log_p_vocab = jax.nn.log_softmax(mlm_logits.astype(jnp.float32), axis=-1)  # [b, k, masks, v]
  token_log_p = jnp.take_along_axis(
      log_p_vocab, targets[:, None, :, None].astype(jnp.int32), axis=-1)[..., 0]  # [b, k, masks]
  token_log_p = token_log_p * weights[:, None, :]
  span_log_p = jnp.sum(token_log_p, axis=-1)  # [batch, k]
  if marginal == "token":
    marginals = jax.nn.logsumexp(log_p_z[:, :, None] + token_log_p, axis=1)  # [batch, masks]
    log_likelihood = jnp.sum(marginals * weights, axis=-1)
  else:
    log_likelihood = jax.nn.logsumexp(log_p_z + span_log_p, axis=1)
  predictions = jnp.argmax(jax.nn.logsumexp(log_p_z[:, :, None, None] + log_p_vocab, axis=1),
                           axis=-1)  # [batch, masks]
  null_predictions = jnp.argmax(log_p_vocab[:, 0], axis=-1)  # [batch, masks]
  top_retrieved = 1 + jnp.argmax(retrieval_logits[:, 1:], axis=-1)  # [batch]
  return REALMQueryScores(
      log_likelihood=log_likelihood, null_log_likelihood=span_log_p[:, 0],
      correct=jnp.sum((predictions == targets) * weights, axis=-1),
      null_correct=jnp.sum((null_predictions == targets) * weights, axis=-1),
      num_masks=jnp.sum(weights, axis=-1),
      top_retrieved_log_likelihood=jnp.take_along_axis(span_log_p, top_retrieved[:, None],
                                                       axis=1)[:, 0],
      null_probability=jnp.exp(log_p_z[:, 0]))


def realm_loss(scores: REALMQueryScores) -> REALMLoss:
  """REALM's loss from each query's `realm_query_scores`: the negative log-likelihood summed over
  the batch and divided by its number of masked wordpieces (so that the token and span
  marginals are on one scale).

  Retrieval utility (the paper's RU) compares, per query, the span's log-likelihood reading the
  best-scored retrieved document (candidate 1 onwards) with reading the null document.
  """
  num_masks = jnp.maximum(jnp.sum(scores.num_masks), 1.0)
  return REALMLoss(
      loss=-jnp.sum(scores.log_likelihood) / num_masks,
      retrieval_utility=jnp.mean(scores.top_retrieved_log_likelihood
                                 - scores.null_log_likelihood),
      null_probability=jnp.mean(scores.null_probability),
      masked_accuracy=jnp.sum(scores.correct) / num_masks)

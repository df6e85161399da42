"""Losses against direct NumPy formulas on small random inputs."""

import jax.numpy as jnp
import numpy as np
import pytest

from orqa_realm.modeling import losses


def numpy_in_batch_softmax(queries, blocks):
  """Query i's positive is block i x (blocks per query)."""
  logits = queries.astype(np.float64) @ blocks.astype(np.float64).T
  group = len(blocks) // len(queries)
  total = 0.0
  correct = 0
  for i, row in enumerate(logits):
    total += np.log(np.exp(row - row.max()).sum()) + row.max() - row[i * group]
    correct += int(np.argmax(row) == i * group)
  return total / len(logits), correct / len(logits)


@pytest.mark.parametrize("num_queries, num_blocks", [(6, 6), (4, 12)])
def test_in_batch_softmax_matches_numpy(num_queries, num_blocks):
  rng = np.random.default_rng(0)
  queries = rng.normal(size=(num_queries, 5)).astype(np.float32)
  blocks = rng.normal(size=(num_blocks, 5)).astype(np.float32)
  group = num_blocks // num_queries
  blocks[0], blocks[group] = queries[0] * 3, queries[1] * 3  # positives that clearly win
  result = losses.in_batch_softmax_loss(jnp.asarray(queries), jnp.asarray(blocks))
  expected_loss, expected_accuracy = numpy_in_batch_softmax(queries, blocks)
  np.testing.assert_allclose(result.loss, expected_loss, rtol=1e-5)
  np.testing.assert_allclose(result.accuracy, expected_accuracy)


def test_in_batch_softmax_scales_scores():
  rng = np.random.default_rng(1)
  queries = rng.normal(size=(4, 5)).astype(np.float32)
  blocks = rng.normal(size=(8, 5)).astype(np.float32)
  result = losses.in_batch_softmax_loss(jnp.asarray(queries), jnp.asarray(blocks), 20.0)
  expected_loss, _ = numpy_in_batch_softmax(queries * 20.0, blocks)
  np.testing.assert_allclose(result.loss, expected_loss, rtol=1e-5)


def test_dpr_loss_leaves_out_copies_of_a_querys_positive():
  # 3 questions with 2 hard negatives each, in groups [positive, negative, negative]: questions
  # 0 and 1 share paragraph 7, and question 2's first negative is block 7 too.
  rng = np.random.default_rng(2)
  block_ids = np.array([7, 8, 9, 7, 10, 11, 3, 7, 12])
  queries = rng.normal(size=(3, 5)).astype(np.float32)
  blocks = rng.normal(size=(9, 5)).astype(np.float32)
  result = losses.in_batch_softmax_loss(jnp.asarray(queries), jnp.asarray(blocks), 2.0,
                                        jnp.asarray(block_ids))
  logits = 2.0 * queries.astype(np.float64) @ blocks.astype(np.float64).T
  losses_by_hand, correct = [], 0
  for i in range(3):
    positive = 3 * i
    kept = [j for j in range(9) if j == positive or block_ids[j] != block_ids[positive]]
    row = logits[i, kept]
    losses_by_hand.append(np.log(np.exp(row).sum()) - logits[i, positive])
    correct += int(kept[int(np.argmax(row))] == positive)
  np.testing.assert_allclose(result.loss, np.mean(losses_by_hand), rtol=1e-5)
  np.testing.assert_allclose(result.accuracy, correct / 3)
  # Without ids the copies of block 7 count as negatives for questions 0 and 1: a larger loss.
  plain = losses.in_batch_softmax_loss(jnp.asarray(queries), jnp.asarray(blocks), 2.0)
  assert plain.loss > result.loss


def test_every_query_needs_a_positive():
  with pytest.raises(ValueError, match="every query needs its positive"):
    losses.in_batch_softmax_loss(jnp.ones((4, 3)), jnp.ones((3, 3)))
  with pytest.raises(ValueError, match="the same number of hard negatives"):
    losses.in_batch_softmax_loss(jnp.ones((4, 3)), jnp.ones((6, 3)))


def numpy_marginal(logits, correct):
  """Per-row -log(sum of softmax over the correct entries), 0 where nothing is correct."""
  result = []
  for row, mask in zip(logits.astype(np.float64), correct):
    if not mask.any():
      result.append(0.0)
      continue
    probabilities = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
    result.append(-np.log(probabilities[mask].sum()))
  return np.array(result)


def test_marginal_log_likelihood_matches_numpy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(5, 7)).astype(np.float32) * 3
  correct = np.zeros((5, 7), bool)
  correct[0, 2] = True  # one correct candidate
  correct[1, [0, 3, 6]] = True  # several
  correct[3] = True  # all: loss 0
  # Row 2 and 4: nothing correct.
  found, any_correct = losses.marginal_log_likelihood(jnp.asarray(logits), jnp.asarray(correct))
  np.testing.assert_allclose(found, numpy_marginal(logits, correct), rtol=1e-5, atol=1e-6)
  assert any_correct.tolist() == [True, True, False, True, False]
  assert found[2] == 0 and found[4] == 0 and abs(float(found[3])) < 1e-6


def test_marginal_gradient_is_finite_and_zero_without_a_correct_candidate():
  import jax

  logits = jnp.asarray(np.random.default_rng(2).normal(size=(2, 4)), jnp.float32)
  correct = jnp.asarray([[False, True, False, True], [False] * 4])
  gradient = jax.grad(lambda x: losses.marginal_log_likelihood(x, correct)[0].sum())(logits)
  assert np.isfinite(gradient).all()
  np.testing.assert_array_equal(gradient[1], 0.0)
  # d/dlogits = softmax(all) - softmax restricted to the correct candidates.
  probabilities = np.asarray(jax.nn.softmax(logits[0]))
  expected = probabilities - np.where(correct[0], probabilities, 0) / probabilities[[1, 3]].sum()
  np.testing.assert_allclose(gradient[0], expected, rtol=1e-5, atol=1e-6)


def test_early_and_full_losses_match_numpy():
  rng = np.random.default_rng(3)
  retrieval_logits = rng.normal(size=(4, 9)).astype(np.float32)
  block_has_answer = rng.random((4, 9)) < 0.3
  block_has_answer[2] = False  # a question whose retrieved blocks hold no answer
  early = losses.early_loss(jnp.asarray(retrieval_logits), jnp.asarray(block_has_answer))
  np.testing.assert_allclose(early.loss, numpy_marginal(retrieval_logits, block_has_answer).mean(),
                             rtol=1e-5)
  np.testing.assert_allclose(early.has_correct, block_has_answer.any(axis=1).mean())

  span_logits = rng.normal(size=(4, 3, 6)).astype(np.float32)
  span_is_answer = np.zeros((4, 3, 6), bool)
  span_is_answer[0, 1, 2] = True
  span_is_answer[1, [0, 2], [5, 1]] = True  # correct spans in two different blocks
  span_is_answer[3, 0, :3] = True
  full = losses.full_loss(jnp.asarray(span_logits), jnp.asarray(span_is_answer))
  expected = numpy_marginal(span_logits.reshape(4, -1), span_is_answer.reshape(4, -1))
  np.testing.assert_allclose(full.loss, expected.mean(), rtol=1e-5)
  np.testing.assert_allclose(full.has_correct, 0.75)


def numpy_log_softmax(x, axis=-1):
  x = np.asarray(x, np.float64)
  shifted = x - x.max(axis=axis, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def numpy_realm(retrieval_logits, mlm_logits, targets, target_mask, marginal):
  """REALM's loss and retrieval utility written out with loops, in float64."""
  batch, k, masks, _ = mlm_logits.shape
  log_p_z = numpy_log_softmax(retrieval_logits)
  log_p_vocab = numpy_log_softmax(mlm_logits)
  total, count, utilities = 0.0, target_mask.sum(), []
  for b in range(batch):
    token = np.array([[log_p_vocab[b, z, j, targets[b, j]] for j in range(masks)]
                      for z in range(k)])  # [k, masks]
    token = token * target_mask[b]
    if marginal == "token":
      for j in np.flatnonzero(target_mask[b]):
        total += np.log(np.sum(np.exp(log_p_z[b] + token[:, j])))
    else:
      total += np.log(np.sum(np.exp(log_p_z[b] + token.sum(axis=1))))
    best = 1 + int(np.argmax(retrieval_logits[b, 1:]))
    utilities.append(token[best].sum() - token[0].sum())
  return -total / count, np.mean(utilities)


def realm_loss(*args):
  return losses.realm_loss(losses.realm_query_scores(*args))


def test_realm_query_scores_without_retrieval_against_numpy():
  """Reading the null document alone: each query's summed log-probability of its targets and
  its argmax hits at candidate 0, whatever the retrieval scores."""
  rng = np.random.default_rng(3)
  batch, k, masks, vocab = 3, 4, 5, 11
  mlm_logits = rng.normal(size=(batch, k, masks, vocab)) * 2
  targets = rng.integers(vocab, size=(batch, masks))
  targets[0, :2] = mlm_logits[0, 0, :2].argmax(-1)  # two null-document hits
  target_mask = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool)
  scores = losses.realm_query_scores(
      jnp.asarray(rng.normal(size=(batch, k)), jnp.float32), jnp.asarray(mlm_logits, jnp.float32),
      jnp.asarray(targets), jnp.asarray(target_mask))
  null = numpy_log_softmax(mlm_logits[:, 0])  # [batch, masks, vocab]
  picked = np.take_along_axis(null, targets[..., None], -1)[..., 0]
  np.testing.assert_allclose(scores.null_log_likelihood, (picked * target_mask).sum(-1),
                             rtol=1e-5)
  np.testing.assert_array_equal(scores.null_correct,
                                ((null.argmax(-1) == targets) * target_mask).sum(-1))
  np.testing.assert_array_equal(scores.num_masks, target_mask.sum(-1))
  assert scores.null_correct[0] >= 2


@pytest.mark.parametrize("marginal", ["token", "span"])
def test_realm_loss_matches_numpy(marginal):
  rng = np.random.default_rng(0)
  batch, k, masks, vocab = 3, 4, 5, 11
  retrieval_logits = rng.normal(size=(batch, k)) * 3
  mlm_logits = rng.normal(size=(batch, k, masks, vocab)) * 2
  targets = rng.integers(vocab, size=(batch, masks))
  target_mask = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool)
  result = realm_loss(jnp.asarray(retrieval_logits, jnp.float32),
                      jnp.asarray(mlm_logits, jnp.float32), jnp.asarray(targets),
                      jnp.asarray(target_mask), marginal)
  expected_loss, expected_utility = numpy_realm(retrieval_logits, mlm_logits, targets,
                                                target_mask, marginal)
  np.testing.assert_allclose(float(result.loss), expected_loss, rtol=1e-5)
  np.testing.assert_allclose(float(result.retrieval_utility), expected_utility, rtol=1e-5)
  np.testing.assert_allclose(float(result.null_probability),
                             np.exp(numpy_log_softmax(retrieval_logits)[:, 0]).mean(), rtol=1e-5)


def test_realm_marginals_differ_and_agree_on_one_document():
  """Token and span marginals differ once documents disagree, and coincide with one candidate
  carrying all the retrieval mass."""
  rng = np.random.default_rng(1)
  mlm_logits = jnp.asarray(rng.normal(size=(2, 3, 4, 7)) * 2, jnp.float32)
  targets, target_mask = jnp.asarray(rng.integers(7, size=(2, 4))), jnp.ones((2, 4), bool)
  spread = jnp.zeros((2, 3))
  token = realm_loss(spread, mlm_logits, targets, target_mask, "token").loss
  span = realm_loss(spread, mlm_logits, targets, target_mask, "span").loss
  assert abs(float(token) - float(span)) > 1e-3
  peaked = jnp.array([[0.0, 200.0, 0.0], [0.0, 0.0, 200.0]])
  np.testing.assert_allclose(
      float(realm_loss(peaked, mlm_logits, targets, target_mask, "token").loss),
      float(realm_loss(peaked, mlm_logits, targets, target_mask, "span").loss), rtol=1e-5)


def test_listwise_softmax_matches_numpy():
  rng = np.random.default_rng(2)
  scores = rng.normal(size=(5, 8)).astype(np.float32)
  scores[1, 0] = 9.0  # a positive that clearly wins
  result = losses.listwise_softmax_loss(jnp.asarray(scores))
  wide = scores.astype(np.float64)
  expected = np.mean(np.log(np.exp(wide).sum(axis=1)) - wide[:, 0])
  np.testing.assert_allclose(result.loss, expected, rtol=1e-6)
  np.testing.assert_allclose(result.accuracy, np.mean(np.argmax(scores, axis=1) == 0))

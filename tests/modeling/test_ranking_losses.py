"""Ranking and distillation losses against direct NumPy formulas."""

import jax
import jax.numpy as jnp
import numpy as np

from orqa_realm.modeling import ranking_losses

RNG = np.random.default_rng(0)
STUDENT = RNG.normal(size=(4, 5)).astype(np.float32)
TEACHER = (3 * RNG.normal(size=(4, 5))).astype(np.float32)


def test_margin_mse_equals_numpy():
  expected = np.mean([((STUDENT[q, 0] - STUDENT[q, j]) - (TEACHER[q, 0] - TEACHER[q, j])) ** 2
                      for q in range(4) for j in range(1, 5)])
  np.testing.assert_allclose(ranking_losses.margin_mse(jnp.asarray(STUDENT), jnp.asarray(TEACHER)),
                             expected, rtol=1e-6)
  # Another positive column per query, and negatives left out by `valid`.
  positives = np.array([2, 0, 4, 1])
  valid = RNG.random((4, 5)) > 0.3
  pairs = [(q, j) for q in range(4) for j in range(5) if j != positives[q] and valid[q, j]]
  expected = np.mean([((STUDENT[q, positives[q]] - STUDENT[q, j])
                       - (TEACHER[q, positives[q]] - TEACHER[q, j])) ** 2 for q, j in pairs])
  found = ranking_losses.margin_mse(jnp.asarray(STUDENT), jnp.asarray(TEACHER),
                                    jnp.asarray(positives), jnp.asarray(valid))
  np.testing.assert_allclose(found, expected, rtol=1e-6)


def numpy_kl(student, teacher, temperature=1.0):
  total = 0.0
  for s, t in zip(student.astype(np.float64), teacher.astype(np.float64) / temperature):
    p = np.exp(t - t.max()) / np.exp(t - t.max()).sum()
    log_q = s - s.max() - np.log(np.exp(s - s.max()).sum())
    total += np.sum(p * (np.log(p) - log_q))
  return total / len(student)


def test_listwise_kl_equals_numpy():
  found = ranking_losses.listwise_kl(jnp.asarray(STUDENT), jnp.asarray(TEACHER),
                                     teacher_temperature=2.0)
  np.testing.assert_allclose(found, numpy_kl(STUDENT, TEACHER, 2.0), rtol=1e-5)
  # A masked candidate is left out of both distributions.
  valid = np.ones((4, 5), bool)
  valid[:, 3] = False
  found = ranking_losses.listwise_kl(jnp.asarray(STUDENT), jnp.asarray(TEACHER),
                                     jnp.asarray(valid))
  keep = [0, 1, 2, 4]
  np.testing.assert_allclose(found, numpy_kl(STUDENT[:, keep], TEACHER[:, keep]), rtol=1e-5)
  assert float(ranking_losses.listwise_kl(jnp.asarray(TEACHER), jnp.asarray(TEACHER))) < 1e-6
  gradient = jax.grad(lambda s: ranking_losses.listwise_kl(s, jnp.asarray(TEACHER),
                                                           jnp.asarray(valid)))(
                                                               jnp.asarray(STUDENT))
  assert np.all(np.isfinite(gradient)) and np.all(gradient[:, 3] == 0)


def test_ranknet_and_lambda_weights_equal_numpy():
  weights = RNG.random((4, 5)).astype(np.float32)
  expected = sum(weights[q, j] * np.log1p(np.exp(-(STUDENT[q, 0] - STUDENT[q, j])))
                 for q in range(4) for j in range(1, 5)) / weights[:, 1:].sum()
  np.testing.assert_allclose(
      ranking_losses.ranknet(jnp.asarray(STUDENT), jnp.asarray(weights)), expected, rtol=1e-5)
  positive_ranks = np.array([1, 3, 0, 12])
  negative_ranks = np.array([[2, 5], [1, 11], [4, 0], [1, 2]])
  reciprocal = lambda r: 1.0 / r if 1 <= r <= 10 else 0.0
  expected = np.array([[abs(reciprocal(p) - reciprocal(n)) for n in row]
                       for p, row in zip(positive_ranks, negative_ranks)])
  np.testing.assert_allclose(ranking_losses.reciprocal_rank_swap_weights(
      jnp.asarray(positive_ranks), jnp.asarray(negative_ranks)), expected, rtol=1e-6)

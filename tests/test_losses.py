"""Losses against direct NumPy formulas on small random inputs."""

import jax.numpy as jnp
import numpy as np
import pytest

from orqa_realm import losses


def numpy_in_batch_softmax(queries, blocks):
  logits = queries.astype(np.float64) @ blocks.astype(np.float64).T
  total = 0.0
  correct = 0
  for i, row in enumerate(logits):
    total += np.log(np.exp(row - row.max()).sum()) + row.max() - row[i]
    correct += int(np.argmax(row) == i)
  return total / len(logits), correct / len(logits)


@pytest.mark.parametrize("num_queries, num_blocks", [(6, 6), (4, 9)])
def test_in_batch_softmax_matches_numpy(num_queries, num_blocks):
  rng = np.random.default_rng(0)
  queries = rng.normal(size=(num_queries, 5)).astype(np.float32)
  blocks = rng.normal(size=(num_blocks, 5)).astype(np.float32)
  blocks[:2] = queries[:2] * 3  # two queries whose positive clearly wins
  result = losses.in_batch_softmax_loss(jnp.asarray(queries), jnp.asarray(blocks))
  expected_loss, expected_accuracy = numpy_in_batch_softmax(queries, blocks)
  np.testing.assert_allclose(result.loss, expected_loss, rtol=1e-5)
  np.testing.assert_allclose(result.accuracy, expected_accuracy)


def test_every_query_needs_a_positive():
  with pytest.raises(ValueError, match="every query needs its positive"):
    losses.in_batch_softmax_loss(jnp.ones((4, 3)), jnp.ones((3, 3)))

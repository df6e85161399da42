"""Late-interaction scores against direct NumPy loops: MaxSim (all pairs and each query's own
candidates), ME-BERT's max and the poly-encoder's attention, with masks, an empty passage, and
finite gradients."""

import jax
import jax.numpy as jnp
import numpy as np

from orqa_realm.modeling.late_interaction import maxsim, paired_maxsim, poly_attention_score

RNG = np.random.default_rng(0)


def numpy_maxsim(query, query_mask, passage, passage_mask):
  if not passage_mask.any():
    return 0.0
  total = 0.0
  for i in range(len(query)):
    if query_mask[i]:
      total += max(float(query[i] @ passage[j]) for j in range(len(passage)) if passage_mask[j])
  return total


def test_maxsim_equals_numpy_with_masks_and_an_empty_passage():
  queries = RNG.normal(size=(3, 4, 8)).astype(np.float32)
  query_mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 1, 0]], bool)
  passages = RNG.normal(size=(5, 6, 8)).astype(np.float32)
  passage_mask = RNG.random((5, 6)) < 0.6
  passage_mask[2] = False  # nothing matchable: scores 0
  found = np.asarray(maxsim(queries, query_mask, passages, passage_mask))
  expected = [[numpy_maxsim(q, qm, p, pm) for p, pm in zip(passages, passage_mask)]
              for q, qm in zip(queries, query_mask)]
  np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-5)
  assert np.all(found[:, 2] == 0)


def test_paired_maxsim_scores_each_query_with_its_own_candidates():
  queries = RNG.normal(size=(2, 3, 8)).astype(np.float32)
  query_mask = np.ones((2, 3), bool)
  candidates = RNG.normal(size=(2, 4, 5, 8)).astype(np.float32)
  candidate_mask = RNG.random((2, 4, 5)) < 0.7
  candidate_mask[:, :, 0] = True
  found = np.asarray(paired_maxsim(queries, query_mask, candidates, candidate_mask))
  for b in range(2):
    np.testing.assert_allclose(
        found[b], np.asarray(maxsim(queries[b:b + 1], query_mask[b:b + 1], candidates[b],
                                    candidate_mask[b]))[0], rtol=1e-6)


def test_me_bert_is_maxsim_with_one_query_vector():
  """ME-BERT's score, the best inner product of the query with a passage's vectors, is MaxSim
  of a one-vector query."""
  queries = RNG.normal(size=(3, 8)).astype(np.float32)
  passages = RNG.normal(size=(4, 2, 8)).astype(np.float32)
  mask = np.array([[1, 1], [1, 0], [0, 1], [0, 0]], bool)
  found = np.asarray(maxsim(queries[:, None], np.ones((3, 1), bool), passages, mask))
  expected = [[max((q @ p[k] for k in range(2) if m[k]), default=0.0)
               for p, m in zip(passages, mask)] for q in queries]
  np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-6)


def test_poly_attention_equals_numpy():
  queries = RNG.normal(size=(3, 8)).astype(np.float32)
  passages = RNG.normal(size=(4, 5, 8)).astype(np.float32)
  mask = RNG.random((4, 5)) < 0.7
  mask[:, 0] = True
  mask[3] = False
  found = np.asarray(poly_attention_score(queries, passages, mask))
  for i, q in enumerate(queries):
    for n, (p, m) in enumerate(zip(passages, mask)):
      if not m.any():
        assert found[i, n] == 0
        continue
      logits = p[m] @ q
      weights = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
      np.testing.assert_allclose(found[i, n], q @ (weights @ p[m]), rtol=1e-4, atol=1e-5)


def test_gradients_stay_finite_with_masked_and_empty_passages():
  queries = jnp.asarray(RNG.normal(size=(2, 3, 4)), jnp.float32)
  passages = jnp.asarray(RNG.normal(size=(3, 5, 4)), jnp.float32)
  passage_mask = np.array([[1, 1, 0, 0, 0], [0] * 5, [1] * 5], bool)
  grads = jax.grad(lambda q, p: maxsim(q, np.ones((2, 3), bool), p, passage_mask).sum()
                   + poly_attention_score(q[:, 0], p, passage_mask).sum(),
                   argnums=(0, 1))(queries, passages)
  assert all(np.isfinite(np.asarray(g)).all() for g in grads)
  assert np.all(np.asarray(grads[1])[1] == 0)  # the empty passage gets no gradient

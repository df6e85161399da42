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


def in_batch_softmax_loss(query_embeddings: jax.Array, block_embeddings: jax.Array) -> RetrievalLoss:
  """Softmax over all blocks of the batch; query i's positive is block i (ICT, DPR).

  Blocks beyond the first `num_queries` (e.g. DPR's hard negatives) are negatives for every query.

  Args:
    query_embeddings: [num_queries, dim].
    block_embeddings: [num_blocks, dim], num_blocks >= num_queries.
  """
  num_queries = query_embeddings.shape[0]
  if block_embeddings.shape[0] < num_queries:
    raise ValueError(f"{block_embeddings.shape[0]} blocks for {num_queries} queries: every query "
                     "needs its positive block")
  logits = jnp.einsum("qd,bd->qb", query_embeddings, block_embeddings,
                      preferred_element_type=jnp.float32)  # [num_queries, num_blocks]
  positives = jnp.arange(num_queries)
  positive_logits = logits[positives, positives]  # [num_queries]
  loss = jnp.mean(jax.nn.logsumexp(logits, axis=-1) - positive_logits)
  accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == positives)
  return RetrievalLoss(loss=loss, accuracy=accuracy)

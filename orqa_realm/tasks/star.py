"""STAR (Zhan et al. 2021, "Optimizing Dense Retrieval Model Training with Hard Negatives"):
static hard negatives plus in-batch random negatives, with RankNet's pairwise loss.

    python -m orqa_realm.train --task=star --flagfile=configs/dpr_squad_demo.cfg

The batch is DPR's: each query with its positive and `--hard_negatives_per_question` static hard
negatives (mined once, `--negatives_retrieval`). Each query's pairs (positive, negative) are
scored by RankNet, log(1 + exp(-(s(q, p+) - s(q, p-)))): over its own hard negatives, and over
the batch's other queries' blocks as random negatives, the latter weighted by
`--star_random_weight` (alpha; random negatives steady training on hard ones, which alone
destabilise it, the paper finds). A row holding the query's own positive block again is left
out, as DPR does.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from orqa_realm.core.config import setting
from orqa_realm.modeling.ranking_losses import ranknet
from orqa_realm.tasks.dpr import DPRConfig, DPRInputs, DPRTask


@dataclasses.dataclass(frozen=True)
class STARConfig(DPRConfig):
  """DPR's settings and the weight of the random negatives."""
  random_negative_weight: float = setting(
      0.1, "alpha: weight of the RankNet loss over in-batch random negatives, added to the loss "
      "over the static hard negatives.", flag="star_random_weight")


def star_pair_weights(block_ids, num_queries: int):
  """([queries, blocks] hard-negative mask, [queries, blocks] random-negative mask, [queries]
  positive columns) for a DPR batch whose blocks come query by query, positive first."""
  num_blocks = block_ids.shape[0]
  group = num_blocks // num_queries
  rows = jnp.arange(num_queries)[:, None]
  columns = jnp.arange(num_blocks)[None, :]
  positives = jnp.arange(num_queries) * group
  copies = block_ids[None, :] == block_ids[positives][:, None]  # the positive's block (itself too)
  own = columns // group == rows
  hard = own & ~copies
  random = ~own & ~copies
  return hard.astype(jnp.float32), random.astype(jnp.float32), positives


class STARTask(DPRTask):
  name = "star"
  config_class = STARConfig

  def loss(self, params, batch: DPRInputs, rng, deterministic: bool):
    query_embeddings, block_embeddings = self.embed(params, batch.queries, batch.blocks, rng,
                                                    deterministic)
    scores = self.config.retriever.score_scale * jnp.einsum(
        "qd,bd->qb", query_embeddings, block_embeddings,
        preferred_element_type=jnp.float32)  # [queries, blocks]
    hard, random, positives = star_pair_weights(batch.block_ids, query_embeddings.shape[0])
    hard_loss = ranknet(scores, hard, positives)
    random_loss = ranknet(scores, random, positives)
    loss = hard_loss + self.config.random_negative_weight * random_loss
    # Whether the positive outscores every negative the loss compares it with.
    beaten = jnp.where(hard + random > 0, scores, -jnp.inf).max(axis=-1)
    accuracy = jnp.mean(jnp.take_along_axis(scores, positives[:, None], 1)[:, 0] > beaten)
    return loss, {"loss": loss, "hard_loss": hard_loss, "random_loss": random_loss,
                  "accuracy": accuracy}

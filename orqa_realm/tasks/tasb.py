"""TAS-Balanced (Hofstaetter et al. 2021): topic-aware sampling, balanced margin sampling and
dual supervision, distilling a cross-encoder into the dual encoder.

    python -m orqa_realm.train --flagfile=configs/tasb_squad.cfg

* **Topic-aware sampling**: the training queries are clustered once with k-means
  (`--tasb_clusters`) on their embeddings by the model training starts from (`--bert`'s weights
  or `--retriever_workdir`'s); each step's batch is drawn from one cluster (seeded by the step),
  so that its in-batch negatives share a topic. A cluster smaller than the batch is topped up
  from the others.
* **Balanced margin sampling**: each query of the batch trains on one (positive, negative)
  pair, the negative chosen from its mined pool (`--hard_negatives_per_question`) so that the
  teacher margins t(q, p+) - t(q, p-) of a batch spread evenly over `--tasb_margin_bins` equal
  bins of the margins' range: a bin is drawn uniformly for each query, then a negative whose
  margin falls in it (the nearest bin's when none does).
* **Dual supervision**: Margin-MSE over each query's pair, plus `--tasb_in_batch_weight` times
  Margin-MSE over the in-batch pairs (q_i, p_i) against (q_i, p_j), p_j another query's positive,
  whose teacher scores are computed at each step with the teacher (the paper's in-batch teacher
  runs on the fly too, a cheap ColBERT there). The other queries' negatives are left out of the
  in-batch term: with a cross-encoder teacher they would double its batch x batch passes per
  step.

The batch is a pure function of (seed, step): the clusters are fixed at start-up from the
starting model, the draws seeded by the step.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from sklearn.cluster import KMeans

from orqa_realm.core import parallel
from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.dpr import DPRExample
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.encode import embedding
from orqa_realm.encode.rerank import score_pairs
from orqa_realm.modeling import partitioning
from orqa_realm.modeling.ranking_losses import margin_mse
from orqa_realm.tasks.base import StepContext, TaskContext
from orqa_realm.tasks.distill import student_scores
from orqa_realm.tasks.dpr import DPRConfig, DPRTask


class TASBInputs(NamedTuple):
  queries: TokenBatch  # [batch, query_length]
  blocks: TokenBatch  # [batch x 2, block_length]: per query, its positive then its negative
  block_ids: np.ndarray  # [batch x 2] int32
  teacher_scores: np.ndarray  # [batch, 2] float32: the pair's
  teacher_in_batch: np.ndarray  # [batch, global batch] float32: q_i with every query's positive


@dataclasses.dataclass(frozen=True)
class TASBConfig(DPRConfig):
  """DPR's settings with a teacher (required), and TAS-B's sampling and in-batch supervision."""
  hard_negatives_per_question: int = setting(
      7, "Mined negatives per query: the pool its balanced negative is drawn from.")
  clusters: int = setting(50, "k-means clusters of the training queries (topics).",
                          flag="tasb_clusters")
  margin_bins: int = setting(10, "h: equal bins of the teacher margins a batch balances over.",
                             flag="tasb_margin_bins")
  in_batch_weight: float = setting(
      1.0, "Weight of the in-batch Margin-MSE added to the pairwise one.",
      flag="tasb_in_batch_weight")


def cluster_queries(embeddings: np.ndarray, clusters: int, seed: int) -> list[np.ndarray]:
  """The query indices of each k-means cluster of `embeddings` ([queries, dim]), empty
  clusters dropped."""
  labels = KMeans(n_clusters=min(clusters, len(embeddings)), n_init=1,
                  random_state=seed).fit_predict(embeddings)
  return [members for members in (np.flatnonzero(labels == c) for c in range(labels.max() + 1))
          if len(members)]


def topic_batch(clusters: list[np.ndarray], batch_size: int, rng: np.random.Generator
                ) -> np.ndarray:
  """[batch_size] query indices from one random cluster, topped up from the others (random
  order) when it is too small."""
  first = int(rng.integers(len(clusters)))
  order = [first] + [c for c in rng.permutation(len(clusters)) if c != first]
  chosen: list[int] = []
  for cluster in order:
    members = clusters[cluster]
    chosen += rng.choice(members, min(len(members), batch_size - len(chosen)),
                         replace=False).tolist()
    if len(chosen) == batch_size:
      break
  return np.array(chosen)


def balanced_negatives(margins: np.ndarray, edges: np.ndarray, rng: np.random.Generator
                       ) -> np.ndarray:
  """[queries] pool index of each query's negative: a bin of `edges` drawn uniformly, then a
  negative whose teacher margin lies in it (the one nearest the bin's centre when none does).

  Args:
    margins: [queries, pool] teacher margins t(q, p+) - t(q, p-) of each query's pool.
    edges: [bins + 1] increasing bin edges over the margins' range.
  """
  bins = rng.integers(len(edges) - 1, size=len(margins))
  chosen = np.empty(len(margins), np.int64)
  for row, (row_margins, b) in enumerate(zip(margins, bins)):
    inside = np.flatnonzero((row_margins >= edges[b]) & (row_margins <= edges[b + 1]))
    if len(inside):
      chosen[row] = inside[rng.integers(len(inside))]
    else:
      chosen[row] = int(np.argmin(np.abs(row_margins - (edges[b] + edges[b + 1]) / 2)))
  return chosen


class TASBTask(DPRTask):
  name = "tasb"
  config_class = TASBConfig
  learns_from_teacher = True
  keeps_teacher = True

  def __init__(self, config: TASBConfig, context: TaskContext):
    if config.margin_bins < 1 or config.clusters < 1:
      raise InputError("--tasb_clusters and --tasb_margin_bins must be positive",
                       field="tasb_margin_bins")
    super().__init__(config, context)
    if len(self.examples) < context.batch_size:
      raise InputError(f"{len(self.examples)} training queries cannot fill a batch of "
                       f"{context.batch_size}", field="batch_size")
    margins = self.teacher_scores[:, :1] - self.teacher_scores[:, 1:]  # [examples, pool]
    self.margins = margins
    self.margin_edges = np.linspace(margins.min(), margins.max(), config.margin_bins + 1)
    mesh = parallel.make_mesh()
    self.clusters = cluster_queries(self.starting_query_embeddings(mesh), config.clusters,
                                    context.seed)
    logging.info("tasb: %d training queries in %d clusters (sizes %d-%d)", len(self.examples),
                 len(self.clusters), min(map(len, self.clusters)), max(map(len, self.clusters)))

  def starting_query_embeddings(self, mesh) -> np.ndarray:
    """[examples, dim] the training queries embedded by the model training starts from."""
    params = partitioning.unbox(self.init_params(jax.random.key(self.context.seed)))
    params = self.warm_start(params, mesh)
    return embedding.embed_queries([example.question for example in self.examples], params,
                                   self.config.retriever, self.tokenizer, dtype=jnp.float32,
                                   mesh=mesh)

  def step_pairs(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """([global batch] example indices, [global batch] pool index of each one's negative) of
    step `step`, the same on every host."""
    rng = np.random.default_rng([self.context.seed, step])
    indices = topic_batch(self.clusters, self.context.batch_size, rng)
    return indices, balanced_negatives(self.margins[indices], self.margin_edges, rng)

  def train_batch(self, step: int, context: StepContext) -> TASBInputs:
    indices, negatives = self.step_pairs(step)
    pairs = [self.examples[i]._replace(hard_negatives=(self.examples[i].hard_negatives[n],))
             for i, n in zip(indices, negatives)]
    rows = np.arange(len(indices))[context.rows]
    examples: list[DPRExample] = [pairs[row] for row in rows]
    inputs = self.inputs(self.query_tokens(indices[rows]), examples)
    pair_scores = self.teacher_scores[indices, 0][rows], self.teacher_scores[
        indices[rows], 1 + negatives[rows]]
    # The teacher's in-batch scores, every query with every query's positive: scored whole on
    # every host (the scorer splits one global batch over the mesh), this host's rows kept.
    positives = np.array([pair.positive for pair in pairs], np.int32)
    in_batch = score_pairs(self.teacher.params, self.teacher.config, self.store,
                           [self.question_ids[i] for i in indices],
                           np.tile(positives, (len(indices), 1)),
                           batch_size=self.config.teacher.batch_size, mesh=context.mesh)
    return TASBInputs(*inputs, teacher_scores=np.stack(pair_scores, axis=1).astype(np.float32),
                      teacher_in_batch=in_batch[rows])

  def loss(self, params, batch: TASBInputs, rng, deterministic: bool):
    config = self.config
    query_embeddings, block_embeddings = self.embed(params, batch.queries, batch.blocks, rng,
                                                    deterministic)
    scale = config.retriever.score_scale
    pairwise = margin_mse(student_scores(query_embeddings, block_embeddings, scale),
                          batch.teacher_scores)
    positives = block_embeddings[::2]  # [batch, dim]
    student_in_batch = scale * jnp.einsum("qd,pd->qp", query_embeddings, positives,
                                          preferred_element_type=jnp.float32)
    # Another query's positive that is this query's positive block too is no negative.
    positive_ids = batch.block_ids[::2]
    valid = positive_ids[None, :] != positive_ids[:, None]
    in_batch = margin_mse(student_in_batch, batch.teacher_in_batch,
                          jnp.arange(query_embeddings.shape[0]), valid)
    loss = pairwise + config.in_batch_weight * in_batch
    return loss, {"loss": loss, "pairwise_margin_mse": pairwise, "in_batch_margin_mse": in_batch,
                  "accuracy": jnp.mean(jnp.argmax(student_in_batch, -1)
                                       == jnp.arange(query_embeddings.shape[0]))}

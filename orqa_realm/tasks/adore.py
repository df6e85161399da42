"""ADORE (Zhan et al. 2021, "Optimizing Dense Retrieval Model Training with Hard Negatives"):
the document index is fixed and only the question encoder is trained, against negatives it
retrieves itself from that index at every step, with a LambdaLoss weighted by the change in the
target metric.

    python -m orqa_realm.train --task=adore --index_dir=runs/index/squad_dpr \\
        --retriever_workdir=runs/dpr_squad_demo --train_qa_dataset=... --workdir=runs/adore

Each step, before the jitted step (`Need.PARAMS`): the batch's questions are embedded with the
parameters the step starts from and searched exactly on the devices in the frozen index, top
`--adore_depth`; each question's negatives are its best `--hard_negatives_per_question` blocks
that may be negatives (DPR's rule: no answer, not the gold paragraph, not a judged document), and
its positive's rank in that ranking is found (0 when it is not in it); too few negatives in
the ranking are topped up at random under the same rule, as not retrieved. The step recomputes
scaled q . d of the positive and the negatives with gradients (their embeddings gathered from the
index on the devices) and takes RankNet's pairwise loss, each (positive, negative) pair weighted
by |delta MRR@`--adore_mrr_cutoff`| of swapping the two in the ranking (LambdaLoss): pairs whose
order changes the metric dominate.

The index must be the one the question encoder's weights made, as for ORQA (an index of
checkpoint N of a run needs that run as --retriever_workdir; one of --bert's weights needs no
flag). The run saves the question tower only; `evaluate --workdir=ADORE_RUN` searches the same
index with it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from orqa_realm.core import checkpoints, parallel, run_directory
from orqa_realm.core.config import nested, setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.dpr import NegativeRule, fill_negatives
from orqa_realm.data.qa import QAEvaluation, question_indices
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.encode import embedding, runs
from orqa_realm.modeling import retriever
from orqa_realm.modeling.ranking_losses import ranknet, reciprocal_rank_swap_weights
from orqa_realm.tasks.base import Need, SavedRetriever, StepContext, Task, TaskContext
from orqa_realm.tasks.common import (RetrieverTaskConfig, frozen_index_retriever,
                                     open_frozen_index)
from orqa_realm.tasks.pairs import TrainingPairs, build_examples, mining_searcher
from orqa_realm.tasks.retrieval_eval import answer_recall_of_index


class ADOREBatch(NamedTuple):
  queries: TokenBatch  # [batch, query_length]
  candidate_embeddings: Any  # [batch, 1 + negatives, dim] float32: positive, then negatives
  pair_weights: np.ndarray  # [batch, 1 + negatives] float32 |delta MRR| of each swap (col 0: 0)


@dataclasses.dataclass(frozen=True)
class ADOREConfig(RetrieverTaskConfig):
  """The settings of ADORE: the frozen index, the training pairs, the retrieved negatives."""
  index_dir: str = setting(
      "", "The frozen block index: versions published by `python -m orqa_realm.embed`, the "
      "newest named by its LATEST file.")
  pairs: TrainingPairs = nested(TrainingPairs())
  hard_negatives_per_question: int = setting(
      7, "Negatives per question: its best-ranked blocks in the frozen index that may be "
      "negatives.")
  depth: int = setting(200, "Blocks retrieved per question at each step.", flag="adore_depth")
  mrr_cutoff: int = setting(10, "The metric LambdaLoss weights pairs by: MRR@N.",
                            flag="adore_mrr_cutoff")
  evaluation: QAEvaluation = nested(QAEvaluation())


def candidates_and_ranks(example, ranking: np.ndarray, rule: NegativeRule, count: int,
                         rng: np.random.Generator) -> tuple[np.ndarray, int, np.ndarray]:
  """([1 + count] block ids: the positive, then the best `count` blocks of `ranking` that may
  be negatives; the positive's 1-based rank in `ranking`, 0 when absent; [count] the negatives'
  ranks). When `ranking` holds too few negatives the rest are drawn at random from the store
  under the same rule, with rank 0 (not retrieved)."""
  ranking = [int(block) for block in ranking]
  ranked = [(rank, block) for rank, block in enumerate(ranking, start=1)
            if rule.allows(example, block)][:count]
  negatives, _ = fill_negatives([block for _, block in ranked],
                                lambda block: rule.allows(example, block), count,
                                len(rule.documents), rng, skip=ranking)
  ranks = [rank for rank, _ in ranked] + [0] * (count - len(ranked))
  positive_rank = ranking.index(example.positive) + 1 if example.positive in ranking else 0
  return (np.array([example.positive, *negatives], np.int32), positive_rank,
          np.array(ranks, np.int64))


class ADORETask(Task):
  name = runs.ADORE_TASK
  config_class = ADOREConfig
  needs = frozenset({Need.PARAMS})
  fixed_retriever_fields = retriever.BLOCK_ENCODER_FIELDS
  trains_block_tower = False

  def __init__(self, config: ADOREConfig, context: TaskContext):
    if not config.index_dir:
      raise InputError("--task=adore needs --index_dir, the frozen index", field="index_dir")
    config.pairs.check()
    config, self.store, self.tokenizer, self.index = open_frozen_index(config)
    self.config, self.context = config, context
    self.model = retriever.DualEncoder(config.retriever, jnp.dtype(context.dtype), context.remat)
    built = build_examples(config.pairs, self.store,
                           mining_searcher(config.pairs, self.store, self.tokenizer,
                                           config.source.bert), 0, context.seed)
    logging.info("adore: %d training examples", len(built.examples))
    self.examples = built.examples
    self.question_ids = self.tokenizer.tokenize([example.question for example in self.examples])
    self.rule = NegativeRule(self.store)
    self.eval_examples = config.evaluation.examples()

  @classmethod
  def saved_retriever(cls, config: ADOREConfig) -> SavedRetriever:
    return frozen_index_retriever(config.index_dir)

  def run_model(self) -> dict[str, Any]:
    return runs.adore_model(self.config.retriever, self.tokenizer.fingerprint,
                            self.index.version)

  def init_params(self, rng: jax.Array) -> dict[str, Any]:
    pretrained = None if self.config.retriever_workdir else self.config.source.pretrained()
    params = retriever.init_params(self.config.retriever, rng,
                                   pretrained.params if pretrained else None)
    return retriever.tower_params(params, self.config.retriever, "query")

  def warm_start(self, params, mesh):
    """The question tower of the --retriever_workdir checkpoint the index was embedded from."""
    workdir = self.config.retriever_workdir
    if not workdir:
      return params
    run = runs.open_retriever_run(workdir)
    with checkpoints.CheckpointReader(run_directory.checkpoint_dir(workdir)) as source:
      return runs.restore_retriever(source, self.index.version.checkpoint_step, run.retriever,
                                    mesh, tower="query")

  def train_batch(self, step: int, context: StepContext) -> ADOREBatch:
    config, mesh = self.config, context.mesh
    indices = question_indices(len(self.examples), self.context.batch_size,
                               seed=self.context.seed, step=step)
    queries = self.tokenizer.pack([self.question_ids[i] for i in indices[context.rows]],
                                  max_length=config.retriever.query_length)
    embed = embedding.make_tower_embedder(config.retriever, jnp.dtype(self.context.dtype), mesh,
                                          retriever.DualEncoder.embed_queries)
    # Every host's questions are searched together; each host ranks them all (the candidates
    # of the global batch are gathered on the devices below).
    query_embeddings = embed(context.params, parallel.global_from_local(queries, mesh))
    depth = min(config.depth, len(self.store))
    _, ranked = self.index.searcher.search_on_device(query_embeddings, depth)
    rankings = parallel.fetch_replicated(ranked)  # [batch, depth]
    candidates, positive_ranks, negative_ranks = zip(*(
        candidates_and_ranks(self.examples[i], ranking, self.rule,
                             config.hard_negatives_per_question,
                             np.random.default_rng([self.context.seed, step, position]))
        for position, (i, ranking) in enumerate(zip(indices, rankings))))
    weights = np.asarray(reciprocal_rank_swap_weights(
        np.array(positive_ranks), np.stack(negative_ranks), config.mrr_cutoff))  # [batch, n]
    weights = np.concatenate([np.zeros((len(weights), 1)), weights], axis=1).astype(np.float32)
    embeddings = self.index.searcher.rows_on_device(np.stack(candidates))  # [batch, 1 + n, d]
    return ADOREBatch(queries, embeddings, weights[context.rows])

  def loss(self, params, batch: ADOREBatch, rng, deterministic: bool):
    query_embeddings = self.model.apply(
        {"params": params}, batch.queries, deterministic,
        method=retriever.DualEncoder.embed_queries, rngs={"dropout": rng})  # [batch, dim]
    scores = self.config.retriever.score_scale * jnp.einsum(
        "bd,bcd->bc", query_embeddings, batch.candidate_embeddings,
        preferred_element_type=jnp.float32)  # [batch, 1 + n]
    loss = ranknet(scores, batch.pair_weights)
    return loss, {"loss": loss, "accuracy": jnp.mean(jnp.argmax(scores, -1) == 0),
                  "weight_mass": jnp.mean(jnp.sum(batch.pair_weights, -1))}

  def evaluate(self, params, mesh, index=None) -> dict[str, float]:
    """Answer recall@k of the held-out questions over the frozen index, searched by the
    current question encoder."""
    del index  # the frozen index it trains over is its own
    if not self.eval_examples:
      return {}
    return answer_recall_of_index(params, self.config.retriever, self.index.searcher,
                                  self.store, self.tokenizer, self.eval_examples,
                                  self.config.evaluation.sorted_ks,
                                  dtype=jnp.dtype(self.context.dtype), mesh=mesh)

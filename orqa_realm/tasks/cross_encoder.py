"""A cross-encoder reranker (monoBERT / BERT_CAT, Nogueira and Cho 2019), trained listwise.

    python -m orqa_realm.train --flagfile=configs/cross_encoder_squad.cfg

Each step takes `batch_size` training queries (seeded epochs of permutations, as DPR); each
query is packed with its positive block and its `--hard_negatives_per_question` hard negatives
as `[CLS] query [SEP] title text [SEP]`, BERT scores every pair from [CLS] (a linear head), and
the loss is the softmax cross-entropy of the positive over the query's 1 + n candidates. The
candidates come from a first-stage ranking (`--negatives_retrieval`: BM25, a published dense
index, or both fused) under DPR's rules (`data/dpr.py`): the positive is the gold paragraph
(SQuAD), the best-ranked block with an answer (other QA sets) or a judged-relevant document
(BEIR qrels); a negative never contains an answer, is never of the gold paragraph and never of a
judged document.

With --eval_qa_dataset, each evaluation reranks BM25's top `--eval_rerank_depth` blocks of the
held-out questions with the current parameters and reports answer recall@k before and after
(`first_stage_answer_recall@k`, `answer_recall@k`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from orqa_realm.core.config import nested, setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.answers import answer_hits, recall_at_k
from orqa_realm.data.pair_inputs import pair_inputs
from orqa_realm.data.qa import QAEvaluation, question_indices
from orqa_realm.data.reader_inputs import LENGTH_MULTIPLE
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.encode import runs
from orqa_realm.encode.rerank import score_pairs
from orqa_realm.index import bm25
from orqa_realm.index.rerank import rerank
from orqa_realm.index.searcher import SearchResult
from orqa_realm.modeling import cross_encoder
from orqa_realm.modeling.cross_encoder import CrossEncoder, CrossEncoderConfig
from orqa_realm.modeling.hf_import import HFBert
from orqa_realm.modeling.losses import listwise_softmax_loss
from orqa_realm.tasks.base import StepContext, Task, TaskContext
from orqa_realm.tasks.common import StoreAndBert, batch_length_multiple, with_store_path
from orqa_realm.tasks.pairs import (TrainingPairs, build_examples, mining_searcher,
                                    negatives_matrix)


class CrossEncoderInputs(NamedTuple):
  pairs: TokenBatch  # [batch, 1 + negatives, length]: each query with its positive, then negatives
  block_ids: np.ndarray  # [batch, 1 + negatives] int32 store index of each candidate


@dataclasses.dataclass(frozen=True)
class CrossEncoderTaskConfig:
  """The settings of cross-encoder training."""
  source: StoreAndBert = nested(StoreAndBert())
  cross_encoder: CrossEncoderConfig = nested(CrossEncoderConfig())
  pairs: TrainingPairs = nested(TrainingPairs())
  negatives_per_query: int = setting(
      7, "Hard negatives per query in its listwise softmax (with its positive: 1 + n "
      "candidates).", flag="hard_negatives_per_question")
  evaluation: QAEvaluation = nested(QAEvaluation())
  eval_rerank_depth: int = setting(
      20, "At each evaluation, BM25's top N blocks of each --eval_qa_dataset question are "
      "reranked.")


class CrossEncoderTask(Task):
  name = "cross_encoder"
  config_class = CrossEncoderTaskConfig
  trains_block_tower = False
  accumulates_gradients = True  # a mean over queries of each one's listwise loss

  def __init__(self, config: CrossEncoderTaskConfig, context: TaskContext):
    # BM25 also gives each evaluation its first stage.
    config.pairs.check(reads_bm25=bool(config.evaluation.qa_dataset))
    if config.negatives_per_query < 1:
      raise InputError("a listwise softmax needs at least one negative per query",
                       field="hard_negatives_per_question")
    self.store, self.tokenizer = config.source.open_store()
    model_config = config.cross_encoder
    if model_config.bert is None:
      model_config = model_config.with_bert(config.source.bert_config())
    self.config = dataclasses.replace(with_store_path(config, self.store),
                                      cross_encoder=model_config)
    self.context = context
    self.model = CrossEncoder(model_config, jnp.dtype(context.dtype), context.remat)
    built = build_examples(config.pairs, self.store,
                           mining_searcher(config.pairs, self.store, self.tokenizer,
                                           config.source.bert),
                           config.negatives_per_query, context.seed)
    logging.info("%s: %d training examples (%d queries without a positive dropped, %d "
                 "negatives drawn at random)", self.name, len(built.examples), built.num_dropped,
                 built.num_random_negatives)
    self.examples = built.examples
    self.query_ids = self.tokenizer.tokenize([example.question for example in self.examples])
    self.eval_examples = config.evaluation.examples()

  def run_model(self) -> dict[str, Any]:
    return runs.cross_encoder_model(self.config.cross_encoder, self.tokenizer.fingerprint)

  @functools.cached_property
  def pretrained(self) -> HFBert | None:
    """--bert's weights (None with --from_scratch), read once however often `init_params` is
    traced."""
    return self.config.source.pretrained()

  def init_params(self, rng: jax.Array) -> Any:
    return cross_encoder.init_params(self.config.cross_encoder, rng,
                                     self.pretrained.params if self.pretrained else None)

  def train_batch(self, step: int, context: StepContext) -> CrossEncoderInputs:
    indices = question_indices(len(self.examples), self.context.batch_size,
                               seed=self.context.seed, step=step)[context.rows]
    block_ids = negatives_matrix(self.examples, indices)  # [rows, 1 + negatives]
    config = self.config.cross_encoder
    pairs = pair_inputs(self.store, [self.query_ids[index] for index in indices], block_ids,
                        max_length=config.max_length, query_length=config.query_length,
                        length_multiple=batch_length_multiple(LENGTH_MULTIPLE,
                                                              config.max_length))
    return CrossEncoderInputs(pairs, block_ids)

  def loss(self, params, batch: CrossEncoderInputs, rng, deterministic: bool):
    scores = self.model.apply({"params": params}, batch.pairs, deterministic,
                              rngs={"dropout": rng})  # [batch, 1 + negatives]
    result = listwise_softmax_loss(scores)
    return result.loss, {"loss": result.loss, "accuracy": result.accuracy}

  @functools.cached_property
  def eval_first_stage(self) -> SearchResult:
    """BM25's top `eval_rerank_depth` blocks of each evaluation question (computed once)."""
    searcher = bm25.open_or_build(self.store, self.config.pairs.bm25)
    depth = min(self.config.eval_rerank_depth, len(self.store))
    return searcher.search_texts([example.question for example in self.eval_examples], depth)

  def evaluate(self, params, mesh, index=None) -> dict[str, float]:
    del index  # it reranks BM25's candidates
    if not self.eval_examples:
      return {}
    first_stage = self.eval_first_stage
    scores = score_pairs(
        params, self.config.cross_encoder, self.store,
        self.tokenizer.tokenize([example.question for example in self.eval_examples]),
        first_stage.ids, dtype=jnp.dtype(self.context.dtype), mesh=mesh)
    reranked = rerank(first_stage, scores)
    ks = [k for k in self.config.evaluation.sorted_ks if k <= first_stage.ids.shape[1]]
    metrics = {}
    for prefix, result in (("first_stage_", first_stage), ("", reranked)):
      recalls = recall_at_k(answer_hits(result.ids, self.store, self.eval_examples), ks)
      metrics.update({f"{prefix}answer_recall@{k}": value for k, value in recalls.items()})
    return metrics


"""Training multi-vector retrievers (`modeling/multi_vector.py`): ColBERT (`--task=colbert`),
ME-BERT (`--task=me_bert`) and the poly-encoder (`--task=poly_encoder`).

    python -m orqa_realm.train --flagfile=configs/colbert_squad.cfg

The data are DPR's (`tasks/dpr.py`): each step takes `batch_size` training queries (seeded epochs
of permutations), each with its positive block and `--hard_negatives_per_question` mined
negatives (BM25, a dense index or both, `--negatives_retrieval`), under DPR's rules against
false negatives. Every query is scored against every block of the global batch and the loss is
the softmax cross-entropy of its positive (in-batch negatives plus hard negatives), a block that
is the query's positive under another row left out.

With `--teacher_workdir` (a cross-encoder run), ColBERTv2's distillation is added: KL(teacher
softmax || student softmax) over each query's own candidates, weighted by `--distill_weight`;
`--denoise_margin` also drops mined negatives the teacher finds relevant (RocketQA), as in DPR.

With `--eval_qa_dataset`, each evaluation encodes the whole store and reports answer recall@k
of exact multi-vector search.
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
from orqa_realm.data.multi_vector_inputs import MarkerIds, VectorInputs
from orqa_realm.data.qa import QAEvaluation, question_indices
from orqa_realm.encode import multi_vector as encode
from orqa_realm.encode import runs
from orqa_realm.index import storage
from orqa_realm.index.multi_vector_search import ExactMultiVectorSearcher
from orqa_realm.modeling import multi_vector
from orqa_realm.modeling.hf_import import HFBert
from orqa_realm.modeling.losses import in_batch_softmax_of_scores
from orqa_realm.modeling.multi_vector import (ColBERTConfig, MEBERTConfig, MultiVectorConfig,
                                              MultiVectorEncoder, PolyEncoderConfig)
from orqa_realm.modeling.ranking_losses import listwise_kl
from orqa_realm.tasks.base import StepContext, Task, TaskContext
from orqa_realm.tasks.common import StoreAndBert, with_store_path
from orqa_realm.tasks.dpr import batch_blocks
from orqa_realm.tasks.pairs import TrainingPairs, build_examples, mining_searcher
from orqa_realm.tasks.teacher import TeacherSettings, restore_teacher, teach


class MultiVectorBatch(NamedTuple):
  queries: VectorInputs  # [batch, query_length]
  blocks: VectorInputs  # [batch x (1 + negatives), length]: per query, its positive, negatives
  block_ids: np.ndarray  # [batch x (1 + negatives)] int32 store index of each block row
  teacher_scores: np.ndarray  # [batch, 1 + negatives] float32 (zeros without a teacher)


@dataclasses.dataclass(frozen=True)
class LateInteractionConfig:
  """What the multi-vector tasks share; each adds its retriever's settings (`retriever`)."""
  source: StoreAndBert = nested(StoreAndBert())
  pairs: TrainingPairs = nested(TrainingPairs())
  hard_negatives_per_question: int = setting(
      1, "Mined hard negatives per query, besides the in-batch negatives.")
  teacher: TeacherSettings = nested(TeacherSettings())
  distill_weight: float = setting(
      1.0, "Weight of the KL from the teacher's scores of each query's candidates (ColBERTv2), "
      "added to the in-batch loss; read with --teacher_workdir.")
  distill_temperature: float = setting(
      1.0, "Divides the teacher's scores before the KL's softmax.")
  evaluation: QAEvaluation = nested(QAEvaluation())
  retriever: MultiVectorConfig | None = None  # each task's own settings class (a subclass)


@dataclasses.dataclass(frozen=True)
class ColBERTTaskConfig(LateInteractionConfig):
  retriever: ColBERTConfig = nested(ColBERTConfig())


@dataclasses.dataclass(frozen=True)
class MEBERTTaskConfig(LateInteractionConfig):
  retriever: MEBERTConfig = nested(MEBERTConfig())


@dataclasses.dataclass(frozen=True)
class PolyEncoderTaskConfig(LateInteractionConfig):
  retriever: PolyEncoderConfig = nested(PolyEncoderConfig())


class LateInteractionTask(Task):
  """Trains the multi-vector retriever of `config.retriever`'s kind."""
  config: LateInteractionConfig
  index_kind = storage.MULTI_VECTOR

  def __init__(self, config: LateInteractionConfig, context: TaskContext):
    config.pairs.check()
    config.teacher.check()
    if config.hard_negatives_per_question < 0:
      raise InputError("a negative count of hard negatives", field="hard_negatives_per_question")
    if config.teacher.workdir and config.hard_negatives_per_question < 1:
      raise InputError("distillation needs at least one mined negative per query",
                       field="hard_negatives_per_question")
    defaults = LateInteractionConfig()
    if not config.teacher.workdir and (
        (config.distill_weight, config.distill_temperature)
        != (defaults.distill_weight, defaults.distill_temperature)):
      raise InputError("--distill_weight and --distill_temperature weigh a teacher's scores: "
                       "pass --teacher_workdir", field="teacher_workdir")
    self.store, self.tokenizer = config.source.open_store()
    model_config = config.retriever
    if model_config.bert is None:
      model_config = model_config.with_bert(config.source.bert_config())
    self.config = dataclasses.replace(with_store_path(config, self.store), retriever=model_config)
    self.context = context
    self.model = MultiVectorEncoder(model_config, jnp.dtype(context.dtype), context.remat)
    self.marker_ids = MarkerIds.of(self.tokenizer)
    num_negatives = config.hard_negatives_per_question
    built = build_examples(config.pairs, self.store,
                           mining_searcher(config.pairs, self.store, self.tokenizer,
                                           config.source.bert),
                           config.teacher.pool_size(num_negatives), context.seed)
    logging.info("%s: %d training examples (%d queries without a positive dropped, %d "
                 "negatives drawn at random)", self.name, len(built.examples), built.num_dropped,
                 built.num_random_negatives)
    self.examples = built.examples
    self.teacher_scores = np.zeros((len(self.examples), 1 + num_negatives), np.float32)
    if config.teacher.workdir:
      taught = teach(config.teacher, restore_teacher(config.teacher, self.store), self.examples,
                     self.store, self.tokenizer, num_negatives)
      self.examples, self.teacher_scores = taught.examples, taught.scores
    self.query_ids = self.tokenizer.tokenize([example.question for example in self.examples])
    self.eval_examples = config.evaluation.examples()

  def run_model(self) -> dict[str, Any]:
    return runs.multi_vector_model(self.config.retriever, self.tokenizer.fingerprint)

  @functools.cached_property
  def pretrained(self) -> HFBert | None:
    """--bert's weights (None with --from_scratch), read once however often `init_params` is
    traced."""
    return self.config.source.pretrained()

  def init_params(self, rng: jax.Array) -> Any:
    return multi_vector.init_params(self.config.retriever, rng,
                                    self.pretrained.params if self.pretrained else None)

  def train_batch(self, step: int, context: StepContext) -> MultiVectorBatch:
    indices = question_indices(len(self.examples), self.context.batch_size,
                               seed=self.context.seed, step=step)[context.rows]
    examples = [self.examples[index] for index in indices]
    config = self.config.retriever
    block_ids = batch_blocks(examples)
    return MultiVectorBatch(
        encode.query_batch_inputs(self.tokenizer, [self.query_ids[index] for index in indices],
                                  config, self.marker_ids),
        encode.block_batch_inputs(self.store, block_ids, config, self.marker_ids,
                                  config.block_length),
        block_ids, self.teacher_scores[indices])

  def loss(self, params, batch: MultiVectorBatch, rng, deterministic: bool):
    config = self.config.retriever
    queries, blocks = self.model.apply({"params": params}, batch.queries, batch.blocks,
                                       deterministic, rngs={"dropout": rng})
    # [batch, batch x (1 + negatives)]: every query against every block of the global batch.
    logits = config.score_scale * multi_vector.scores(config, queries, blocks)
    in_batch = in_batch_softmax_of_scores(logits, batch.block_ids)
    metrics = {"in_batch_loss": in_batch.loss, "accuracy": in_batch.accuracy}
    loss = in_batch.loss
    if self.config.teacher.workdir:
      student = config.score_scale * multi_vector.paired_scores(config, queries, blocks)
      distill = listwise_kl(student, batch.teacher_scores,
                            teacher_temperature=self.config.distill_temperature)
      loss = loss + self.config.distill_weight * distill
      metrics.update(distill_loss=distill, teacher_agreement=jnp.mean(
          jnp.argmax(student, -1) == jnp.argmax(batch.teacher_scores, -1)))
    return loss, dict(metrics, loss=loss)

  def evaluate(self, params, mesh, index=None) -> dict[str, float]:
    del index  # recall encodes the whole store with the current parameters
    if not self.eval_examples:
      return {}
    config, dtype = self.config.retriever, jnp.dtype(self.context.dtype)
    corpus = encode.encode_blocks(self.store, self.tokenizer, params, config, dtype=dtype,
                                  mesh=mesh)
    score = functools.partial(multi_vector.scores, config)
    searcher = ExactMultiVectorSearcher(corpus, score, mesh=mesh)
    queries = encode.encode_queries([example.question for example in self.eval_examples],
                                    self.tokenizer, params, config, dtype=dtype, mesh=mesh)
    ks = self.config.evaluation.sorted_ks
    depth = min(max(ks), len(self.store))
    ids = searcher.search_sets(queries, depth).ids
    recalls = recall_at_k(answer_hits(ids, self.store, self.eval_examples),
                          [k for k in ks if k <= depth])
    return {f"answer_recall@{k}": recall for k, recall in recalls.items()}


class ColBERTTask(LateInteractionTask):
  name = "colbert"
  config_class = ColBERTTaskConfig


class MEBERTTask(LateInteractionTask):
  name = "me_bert"
  config_class = MEBERTTaskConfig


class PolyEncoderTask(LateInteractionTask):
  name = "poly_encoder"
  config_class = PolyEncoderTaskConfig

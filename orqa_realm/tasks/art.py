"""ART (Sachan et al. 2023, "Questions Are All You Need to Train a Dense Passage Retriever"):
a dual encoder trained from questions alone, distilling a frozen LM's question likelihood.

    python -m orqa_realm.train --flagfile=configs/art_squad.cfg

Each step takes `batch_size` training questions (seeded epochs, as DPR; their answers and gold
passages are never read). At each step the loop hands the task the newest version of the
refreshed index of the model being trained (the refresher re-embeds the evidence from new
checkpoints, as for ANCE; before step 0 the initial model is indexed); each question, embedded
with the current parameters, takes its top `--art_candidates` blocks from it. The teacher is the
frozen decoder (`encode/question_likelihood.py`): p_teacher(z | q) = softmax over the K blocks
of mean log p(q | prompt(z)) / `--art_teacher_temperature`. The retriever's distribution is the
softmax of `--retrieval_score_scale` x q . z over the same K, both towers re-embedding the blocks
with the current parameters; the loss is KL(p_teacher || p_retriever) averaged over questions.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from absl import logging

from orqa_realm.core.config import nested, setting
from orqa_realm.core.errors import InputError
from orqa_realm.data import beir
from orqa_realm.data.qa import QAEvaluation, load_qa_dataset, question_indices
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.encode.question_likelihood import QuestionLikelihood, QuestionLikelihoodSettings
from orqa_realm.modeling.ranking_losses import listwise_kl
from orqa_realm.tasks.base import Need, SavedRetriever, StepContext, TaskContext
from orqa_realm.tasks.common import (DualEncoderTask, RetrieverTaskConfig,
                                     rank_in_refreshed_index, saved_retriever_of)


class ARTInputs(NamedTuple):
  queries: TokenBatch  # [batch, query_length]
  blocks: TokenBatch  # [batch x candidates, block_length]: each question's K retrieved blocks
  block_ids: np.ndarray  # [batch, candidates] int32
  teacher_scores: np.ndarray  # [batch, candidates] float32 mean log p(question | block)


@dataclasses.dataclass(frozen=True)
class ARTConfig(RetrieverTaskConfig):
  """The settings of ART: the questions, the candidates and the LM teacher."""
  qa_dataset: str = setting(
      "", "Training questions as FORMAT:PATH (as DPR's; only the questions are read).",
      flag="train_qa_dataset")
  beir_queries: str = setting(
      "", "BEIR training queries (id<TAB>text), instead of --train_qa_dataset.",
      flag="train_beir_queries")
  candidates: int = setting(
      8, "Blocks of the refreshed index each question is scored against (ART's K).",
      flag="art_candidates")
  teacher_temperature: float = setting(
      1.0, "Divides the LM's mean log-likelihoods before their softmax over the candidates.",
      flag="art_teacher_temperature")
  teacher: QuestionLikelihoodSettings = nested(QuestionLikelihoodSettings())
  evaluation: QAEvaluation = nested(QAEvaluation())


def read_questions(config: ARTConfig) -> list[str]:
  """The training questions (their answers, if any, are not read)."""
  if bool(config.qa_dataset) == bool(config.beir_queries):
    raise InputError("train on exactly one of --train_qa_dataset and --train_beir_queries")
  if config.qa_dataset:
    return [example.question for example in load_qa_dataset(config.qa_dataset)]
  queries = beir.read_queries(config.beir_queries)
  return [queries[query_id] for query_id in sorted(queries)]


class ARTTask(DualEncoderTask):
  name = "art"
  config_class = ARTConfig
  needs = frozenset({Need.PARAMS, Need.INDEX})

  def __init__(self, config: ARTConfig, context: TaskContext):
    if config.candidates < 2:
      raise InputError("a distribution over candidates needs at least 2", field="art_candidates")
    if config.teacher_temperature <= 0:
      raise InputError(f"must be positive, not {config.teacher_temperature}",
                       field="art_teacher_temperature")
    super().__init__(config, context)
    if config.candidates > len(self.store):
      raise InputError(f"{config.candidates} candidates of a store of {len(self.store)} "
                       "blocks", field="art_candidates")
    self.questions = read_questions(config)
    self.question_ids = self.tokenizer.tokenize(self.questions)
    self.teacher = QuestionLikelihood(config.teacher, self.store)
    logging.info("art: %d training questions, %d candidates each, teacher %s",
                 len(self.questions), config.candidates, self.teacher.tokenizer.path)

  @classmethod
  def saved_retriever(cls, config: ARTConfig) -> SavedRetriever | None:
    return saved_retriever_of(config)

  def train_batch(self, step: int, context: StepContext) -> ARTInputs:
    config = self.config
    indices = question_indices(len(self.questions), self.context.batch_size,
                               seed=self.context.seed, step=step)
    queries = self.tokenizer.pack([self.question_ids[index] for index in indices[context.rows]],
                                  max_length=config.retriever.query_length)
    block_ids = rank_in_refreshed_index(context, queries, config.retriever, self.context.dtype,
                                        config.candidates).astype(np.int32)  # [rows, K]
    teacher_scores = self.teacher([self.questions[index] for index in indices[context.rows]],
                                  block_ids)
    blocks = self.store.encode(block_ids.reshape(-1), max_length=config.retriever.block_length,
                               block_format=config.retriever.block_format)
    return ARTInputs(queries, blocks, block_ids, teacher_scores)

  def loss(self, params, batch: ARTInputs, rng, deterministic: bool):
    query_embeddings, block_embeddings = self.model.apply(
        {"params": params}, batch.queries, batch.blocks, deterministic, rngs={"dropout": rng})
    batch_size, candidates = batch.block_ids.shape
    block_embeddings = block_embeddings.reshape(batch_size, candidates, -1)  # [batch, K, dim]
    scores = self.config.retriever.score_scale * jnp.einsum(
        "bd,bkd->bk", query_embeddings, block_embeddings)  # [batch, K]
    loss = listwise_kl(scores, batch.teacher_scores,
                       teacher_temperature=self.config.teacher_temperature)
    # How often the retriever's best candidate is the teacher's.
    agreement = jnp.mean(jnp.argmax(scores, -1) == jnp.argmax(batch.teacher_scores, -1))
    return loss, {"loss": loss, "teacher_agreement": agreement}

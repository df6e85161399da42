"""DPR (Karpukhin et al. 2020): supervised dual-encoder training with in-batch and BM25 hard
negatives.

Each step takes `batch_size` (question, positive block) examples (seeded epochs of
permutations). The blocks of the step are, example by example, its positive followed by its
`hard_negatives_per_question` hard negatives (see `data/dpr.py`; BM25's by default, or a dense
index's or the hybrid's with `--negatives_retrieval`, `tasks/pairs.py`), and each question's softmax
runs over all of them: the other questions' blocks are its in-batch negatives. Each example's
blocks sit in the rows of its question, so each host builds only its own rows. A block that
is the question's own positive under another row (two questions on one paragraph) is left out
of its softmax. Both towers are trained.

Training pairs come from a QA set (`--train_qa_dataset`) or from BEIR queries and qrels
(`--train_beir_queries`, `--train_beir_qrels`). The retriever starts from --bert's weights or
from another run (`--retriever_workdir`, e.g. ICT).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import numpy as np
from absl import logging

from orqa_realm.core.config import nested, setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.dpr import DPRExample
from orqa_realm.data.qa import QAEvaluation, question_indices
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.modeling.losses import in_batch_softmax_loss
from orqa_realm.modeling.retriever import DualEncoder, embed_in_chunks
from orqa_realm.tasks.base import SavedRetriever, StepContext, TaskContext
from orqa_realm.tasks.common import DualEncoderTask, RetrieverTaskConfig, saved_retriever_of
from orqa_realm.tasks.pairs import TrainingPairs, build_examples, mining_searcher
from orqa_realm.tasks.teacher import TeacherSettings, restore_teacher, teach


class DPRInputs(NamedTuple):
  queries: TokenBatch  # [batch, query_length]
  blocks: TokenBatch  # [batch x (1 + hard negatives), block_length]: per example, its positive
  # then its negatives
  block_ids: np.ndarray  # [batch x (1 + hard negatives)] int32 store index of each block row


@dataclasses.dataclass(frozen=True)
class DPRConfig(RetrieverTaskConfig):
  """The settings of DPR training (and ANCE's, which adds its own)."""
  pairs: TrainingPairs = nested(TrainingPairs())
  hard_negatives_per_question: int = setting(
      1, "Hard negatives per question (DPR: 1 from BM25; ANCE: from the refreshed index), "
      "besides the in-batch negatives.")
  evaluation: QAEvaluation = nested(QAEvaluation())
  teacher: TeacherSettings = nested(TeacherSettings())
  grad_cache_chunk: int = setting(
      0, "Embed queries and blocks this many rows at a time, recomputing each chunk in the "
      "backward pass (GradCache): the in-batch loss spans the whole global batch in the memory "
      "of one chunk. Must divide --batch_size; 0: the whole batch at once.")


def batch_blocks(examples: list[DPRExample]) -> np.ndarray:
  """[batch x (1 + negatives)] block ids: example by example, its positive then its negatives."""
  return np.array([block for example in examples
                   for block in (example.positive, *example.hard_negatives)], np.int32)


class DPRTask(DualEncoderTask):
  name = "dpr"
  config_class = DPRConfig
  # Whether the examples carry mined hard negatives (ANCE mines its own from the index).
  mines_negatives = True
  # Whether the loss reads the teacher's scores (distillation); DPR reads a teacher only to
  # denoise its negatives.
  learns_from_teacher = False
  # Whether the teacher scores pairs during training too (TAS-B's in-batch pairs); otherwise its
  # parameters are let go once the training pairs are scored.
  keeps_teacher = False

  def __init__(self, config: DPRConfig, context: TaskContext):
    config.pairs.check()
    config.teacher.check()
    if self.learns_from_teacher and not config.teacher.workdir:
      raise InputError(f"--task={self.name} learns a cross-encoder's scores: pass "
                       "--teacher_workdir", field="teacher_workdir")
    if config.teacher.workdir and not (self.learns_from_teacher or config.teacher.denoises):
      raise InputError(f"--task={self.name} reads --teacher_workdir only to denoise its "
                       "negatives (--denoise_margin); --task=distill learns from its scores",
                       field="teacher_workdir")
    if config.grad_cache_chunk and context.batch_size % config.grad_cache_chunk:
      raise InputError(f"--grad_cache_chunk={config.grad_cache_chunk} does not divide "
                       f"--batch_size={context.batch_size}", field="grad_cache_chunk")
    super().__init__(config, context)
    searcher = mining_searcher(config.pairs, self.store, self.tokenizer, config.source.bert)
    num_negatives = config.hard_negatives_per_question if self.mines_negatives else 0
    built = build_examples(config.pairs, self.store, searcher,
                           config.teacher.pool_size(num_negatives), context.seed)
    logging.info("%s: %d training examples (%d questions without a positive dropped, %d "
                 "negatives drawn at random)", self.name, len(built.examples), built.num_dropped,
                 built.num_random_negatives)
    self.examples = built.examples
    self.teacher = None  # the cross-encoder run of --teacher_workdir, when kept
    self.teacher_scores = None  # [examples, 1 + negatives] with a teacher
    if config.teacher.workdir:
      teacher = restore_teacher(config.teacher, self.store)
      taught = teach(config.teacher, teacher, self.examples, self.store, self.tokenizer,
                     num_negatives)
      self.examples, self.teacher_scores = taught.examples, taught.scores
      self.teacher = teacher if self.keeps_teacher else None
    self.question_ids = self.tokenizer.tokenize([example.question for example in self.examples])

  @classmethod
  def saved_retriever(cls, config: DPRConfig) -> SavedRetriever | None:
    return saved_retriever_of(config)

  def step_examples(self, step: int, rows: slice) -> tuple[np.ndarray, list[DPRExample]]:
    """The indices of the training examples in rows `rows` of step `step`'s global batch, and
    those examples."""
    indices = question_indices(len(self.examples), self.context.batch_size,
                               seed=self.context.seed, step=step)[rows]
    return indices, [self.examples[index] for index in indices]

  def query_tokens(self, indices: np.ndarray) -> TokenBatch:
    """[examples, query_length] the questions of training examples `indices`."""
    return self.tokenizer.pack([self.question_ids[index] for index in indices],
                               max_length=self.config.retriever.query_length)

  def train_batch(self, step: int, context: StepContext) -> DPRInputs:
    indices, examples = self.step_examples(step, context.rows)  # a function of the step alone
    return self.inputs(self.query_tokens(indices), examples)

  def inputs(self, queries: TokenBatch, examples: list[DPRExample]) -> DPRInputs:
    """The batch of `queries` and their `examples` (with the negatives to use)."""
    block_ids = batch_blocks(examples)
    config = self.config.retriever
    blocks = self.store.encode(block_ids, max_length=config.block_length,
                               block_format=config.block_format)
    return DPRInputs(queries, blocks, block_ids)

  def embed(self, params, queries: TokenBatch, blocks: TokenBatch, rng, deterministic: bool):
    """([batch, dim], [batch x (1 + negatives), dim]) embeddings of the step's queries and
    blocks: in one call, or chunk by chunk with `--grad_cache_chunk` (the same values and
    gradients; dropout masks differ)."""
    chunk = self.config.grad_cache_chunk
    if not chunk:
      return self.model.apply({"params": params}, queries, blocks, deterministic,
                              rngs={"dropout": rng})
    query_rng, block_rng = jax.random.split(rng)
    tower = lambda method: lambda inputs, key: self.model.apply(
        {"params": params}, inputs, deterministic, method=method, rngs={"dropout": key})
    return (embed_in_chunks(tower(DualEncoder.embed_queries), queries, chunk, query_rng),
            embed_in_chunks(tower(DualEncoder.embed_blocks), blocks, chunk, block_rng))

  def loss(self, params, batch: DPRInputs, rng, deterministic: bool):
    query_embeddings, block_embeddings = self.embed(params, batch.queries, batch.blocks, rng,
                                                    deterministic)
    result = in_batch_softmax_loss(query_embeddings, block_embeddings,
                                   self.config.retriever.score_scale, batch.block_ids)
    return result.loss, {"loss": result.loss, "accuracy": result.accuracy}

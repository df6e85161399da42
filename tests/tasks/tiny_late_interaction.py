"""Tiny multi-vector setups (ColBERT, ME-BERT, poly-encoder) shared by their tests and the
multi-device subprocess: the tiny random BERT of tiny_ict, trained on the bundled SQuAD questions
over the SQuAD block store."""

import dataclasses

from orqa_realm.data.qa import QAEvaluation

from orqa_realm.modeling.multi_vector import ColBERTConfig, MEBERTConfig, PolyEncoderConfig
from orqa_realm.tasks.late_interaction import (ColBERTTask, ColBERTTaskConfig, MEBERTTask,
                                               MEBERTTaskConfig, PolyEncoderTask,
                                               PolyEncoderTaskConfig)
from orqa_realm.tasks.pairs import TrainingPairs
from orqa_realm.tasks.teacher import TeacherSettings
from tests.conftest import DEMO_SQUAD
from tests.tasks.tiny_ict import tiny_context, tiny_source

SHAPE = dict(dim=16, query_length=12, block_length=48)
TASKS = dict(
    colbert=(ColBERTTask, ColBERTTaskConfig, ColBERTConfig(**SHAPE)),
    me_bert=(MEBERTTask, MEBERTTaskConfig, MEBERTConfig(num_vectors=4, **SHAPE)),
    poly_encoder=(PolyEncoderTask, PolyEncoderTaskConfig,
                  PolyEncoderConfig(num_vectors=4, **SHAPE)))


def tiny_late_interaction_task(kind: str, block_store: str, bert_dir: str, batch_size: int = 8,
                               seed: int = 0, teacher_workdir: str = "",
                               qa_dataset: str = f"squad:{DEMO_SQUAD}", **overrides):
  """`kind`'s task on `qa_dataset`'s questions with 2 BM25 negatives each; `teacher_workdir`: a
  cross-encoder run to distil (ColBERTv2); `overrides`: the task config's fields."""
  task_class, config_class, retriever = TASKS[kind]
  config = config_class(source=tiny_source(block_store, bert_dir), retriever=retriever,
                        pairs=TrainingPairs(qa_dataset=qa_dataset, negative_depth=20),
                        hard_negatives_per_question=2,
                        teacher=TeacherSettings(workdir=teacher_workdir))
  return task_class(dataclasses.replace(config, **overrides), tiny_context(batch_size, seed))


def tiny_colbert_task(block_store: str, bert_dir: str, **overrides):
  """The tiny ColBERT task evaluated on 20 of the slice's questions (the `tiny_colbert_run`
  fixture's)."""
  return tiny_late_interaction_task(
      "colbert", block_store, bert_dir,
      evaluation=QAEvaluation(qa_dataset=f"squad:{DEMO_SQUAD}", questions=20), **overrides)

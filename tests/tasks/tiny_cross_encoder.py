"""Tiny cross-encoder and distillation setups shared by their tests and the multi-device
subprocesses: the tiny random BERT of tiny_ict, trained on the bundled SQuAD questions over the
SQuAD block store."""

import dataclasses

from orqa_realm.modeling.cross_encoder import CrossEncoderConfig
from orqa_realm.tasks.cross_encoder import CrossEncoderTask, CrossEncoderTaskConfig
from orqa_realm.tasks.distill import DistillConfig, DistillTask
from orqa_realm.tasks.pairs import TrainingPairs
from orqa_realm.tasks.rocketqa import RocketQAv2Config, RocketQAv2Task
from orqa_realm.tasks.tasb import TASBConfig, TASBTask
from orqa_realm.tasks.teacher import TeacherSettings
from tests.conftest import DEMO_SQUAD
from tests.tasks.tiny_dpr import tiny_config
from tests.tasks.tiny_ict import tiny_context, tiny_source

TINY_CROSS_ENCODER = CrossEncoderConfig(query_length=16, max_length=96)


def tiny_cross_encoder_task(block_store: str, bert_dir: str, batch_size: int = 8,
                            seed: int = 0, **overrides) -> CrossEncoderTask:
  """`overrides`: CrossEncoderTaskConfig fields."""
  config = CrossEncoderTaskConfig(
      source=tiny_source(block_store, bert_dir), cross_encoder=TINY_CROSS_ENCODER,
      pairs=TrainingPairs(qa_dataset=f"squad:{DEMO_SQUAD}", negative_depth=20),
      negatives_per_query=3)
  return CrossEncoderTask(dataclasses.replace(config, **overrides),
                          tiny_context(batch_size, seed))


def tiny_distill_task(block_store: str, bert_dir: str, teacher_workdir: str, qa_dataset: str,
                      batch_size: int = 8, seed: int = 0, **overrides) -> DistillTask:
  """The tiny DPR setup (tests/tasks/tiny_dpr.py) on `qa_dataset`'s questions, learning the tiny
  cross-encoder's scores of each one's positive and 3 BM25 negatives; `overrides`:
  DistillConfig fields."""
  config = tiny_config(DistillConfig, block_store, bert_dir, hard_negatives_per_question=3,
                       teacher=TeacherSettings(workdir=teacher_workdir),
                       pairs=TrainingPairs(qa_dataset=qa_dataset, negative_depth=20))
  return DistillTask(dataclasses.replace(config, **overrides), tiny_context(batch_size, seed))


def tiny_tasb_task(block_store: str, bert_dir: str, teacher_workdir: str, qa_dataset: str,
                   batch_size: int = 8, seed: int = 0, **overrides) -> TASBTask:
  """`tiny_distill_task`'s setup sampled and supervised as TAS-B; `overrides`: TASBConfig
  fields."""
  config = tiny_config(TASBConfig, block_store, bert_dir, hard_negatives_per_question=4,
                       teacher=TeacherSettings(workdir=teacher_workdir), clusters=10,
                       pairs=TrainingPairs(qa_dataset=qa_dataset, negative_depth=20))
  return TASBTask(dataclasses.replace(config, **overrides), tiny_context(batch_size, seed))


def tiny_rocketqa_task(block_store: str, bert_dir: str, ranker_workdir: str, qa_dataset: str,
                       batch_size: int = 8, seed: int = 0, **overrides) -> RocketQAv2Task:
  """The tiny retriever and the tiny cross-encoder run as its ranker, trained jointly on
  `qa_dataset`'s questions; `overrides`: RocketQAv2Config fields."""
  config = tiny_config(RocketQAv2Config, block_store, bert_dir, hard_negatives_per_question=3,
                       ranker_workdir=ranker_workdir,
                       pairs=TrainingPairs(qa_dataset=qa_dataset, negative_depth=20))
  return RocketQAv2Task(dataclasses.replace(config, **overrides), tiny_context(batch_size, seed))

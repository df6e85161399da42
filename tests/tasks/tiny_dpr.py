"""Tiny DPR and ANCE setups shared by their tests and the multi-device subprocess: the tiny
random BERT of tiny_ict, trained on the bundled SQuAD questions over the SQuAD block store."""

import dataclasses

from orqa_realm.tasks.ance import ANCEConfig, ANCETask
from orqa_realm.tasks.dpr import DPRConfig, DPRTask
from orqa_realm.tasks.pairs import TrainingPairs
from orqa_realm.tasks.star import STARConfig, STARTask
from tests.conftest import DEMO_SQUAD
from tests.tasks.tiny_ict import TINY_RETRIEVER, tiny_context, tiny_source


def tiny_config(config_class, block_store: str, bert_dir: str, **overrides):
  config = config_class(source=tiny_source(block_store, bert_dir), retriever=TINY_RETRIEVER,
                        pairs=TrainingPairs(qa_dataset=f"squad:{DEMO_SQUAD}", negative_depth=20),
                        hard_negatives_per_question=2)
  return dataclasses.replace(config, **overrides)


def tiny_dpr_task(block_store: str, bert_dir: str, batch_size: int = 8, seed: int = 0,
                  **overrides) -> DPRTask:
  """`overrides`: DPRConfig fields."""
  return DPRTask(tiny_config(DPRConfig, block_store, bert_dir, **overrides),
                 tiny_context(batch_size, seed))


def tiny_ance_task(block_store: str, bert_dir: str, batch_size: int = 8, seed: int = 0,
                   **overrides) -> ANCETask:
  """`overrides`: ANCEConfig fields."""
  return ANCETask(tiny_config(ANCEConfig, block_store, bert_dir, **overrides),
                  tiny_context(batch_size, seed))


def tiny_star_task(block_store: str, bert_dir: str, batch_size: int = 8, seed: int = 0,
                   **overrides) -> STARTask:
  """`overrides`: STARConfig fields."""
  return STARTask(tiny_config(STARConfig, block_store, bert_dir, **overrides),
                  tiny_context(batch_size, seed))

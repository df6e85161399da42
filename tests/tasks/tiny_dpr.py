"""Tiny DPR and ANCE setups shared by their tests and the multi-device subprocess: the tiny
random BERT of tiny_ict, trained on the bundled SQuAD questions over the SQuAD block store."""

import jax.numpy as jnp

from orqa_realm.modeling.retriever import RetrieverConfig
from orqa_realm.tasks.ance import ANCEConfig, ANCETask
from orqa_realm.tasks.dpr import DPRConfig, DPRTask
from tests.conftest import DEMO_SQUAD
from tests.tasks.tiny_ict import TINY_BERT


def tiny_config(block_store: str, bert_dir: str, batch_size: int, **overrides) -> dict:
  config = dict(block_store=block_store, retriever=RetrieverConfig(TINY_BERT, projection_size=16),
                bert_dir=bert_dir, batch_size=batch_size, train_qa_dataset=f"squad:{DEMO_SQUAD}",
                hard_negatives_per_question=2, hard_negative_depth=20, query_length=16,
                block_length=48, dtype=jnp.float32)
  config.update(overrides)
  return config


def tiny_dpr_task(block_store: str, bert_dir: str, batch_size: int = 8, **overrides) -> DPRTask:
  return DPRTask(DPRConfig(**tiny_config(block_store, bert_dir, batch_size, **overrides)))


def tiny_ance_task(block_store: str, bert_dir: str, batch_size: int = 8,
                   **overrides) -> ANCETask:
  return ANCETask(ANCEConfig(**tiny_config(block_store, bert_dir, batch_size, **overrides)))

"""A tiny masked-LM setup shared by its tests and the multi-device subprocess: the tiny random
BERT of tiny_ict over a SQuAD store of conftest."""

import dataclasses

from orqa_realm.tasks.mlm import MLMConfig, MLMTask
from tests.tasks.tiny_ict import tiny_context, tiny_source


def tiny_mlm_task(block_store: str, bert_dir: str, batch_size: int = 8, seed: int = 0,
                  **overrides) -> MLMTask:
  """`overrides`: MLMConfig fields."""
  config = MLMConfig(source=tiny_source(block_store, bert_dir), max_masks=6, query_length=24,
                     heldout_fraction=0.1, eval_batches=2)
  return MLMTask(dataclasses.replace(config, **overrides), tiny_context(batch_size, seed))

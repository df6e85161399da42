"""A tiny SPLADE setup shared by its tests and the multi-device subprocess: the tiny random BERT
of tiny_ict with a fresh MLM head, trained on the bundled SQuAD questions over a SQuAD store."""

import dataclasses

from orqa_realm.modeling.splade import SpladeConfig
from orqa_realm.tasks.pairs import TrainingPairs
from orqa_realm.tasks.splade import SpladeTask, SpladeTaskConfig
from tests.conftest import DEMO_SQUAD
from tests.tasks.tiny_ict import tiny_context, tiny_source


def tiny_splade_task(block_store: str, bert_dir: str, batch_size: int = 8, seed: int = 0,
                     **overrides) -> SpladeTask:
  """`overrides`: SpladeTaskConfig fields."""
  config = SpladeTaskConfig(
      source=tiny_source(block_store, bert_dir),
      splade=SpladeConfig(query_length=16, block_length=48),
      pairs=TrainingPairs(qa_dataset=f"squad:{DEMO_SQUAD}", negative_depth=20),
      hard_negatives_per_question=1, query_flops=0.01, block_flops=0.005)
  return SpladeTask(dataclasses.replace(config, **overrides), tiny_context(batch_size, seed))

"""A tiny DeepCT setup shared by its tests and the multi-device subprocess: the tiny random BERT
of tiny_ict with a fresh weight layer, trained on the bundled SQuAD questions over a SQuAD
store."""

import dataclasses

from orqa_realm.modeling.deepct import DeepCTConfig
from orqa_realm.tasks.deepct import DeepCTTask, DeepCTTaskConfig
from orqa_realm.tasks.pairs import TrainingPairs
from tests.conftest import DEMO_SQUAD
from tests.tasks.tiny_ict import tiny_context, tiny_source


def tiny_deepct_task(block_store: str, bert_dir: str, batch_size: int = 8, seed: int = 0,
                     **overrides) -> DeepCTTask:
  """`overrides`: DeepCTTaskConfig fields."""
  config = DeepCTTaskConfig(source=tiny_source(block_store, bert_dir),
                            deepct=DeepCTConfig(block_length=48),
                            pairs=TrainingPairs(qa_dataset=f"squad:{DEMO_SQUAD}",
                                                negative_depth=20))
  return DeepCTTask(dataclasses.replace(config, **overrides), tiny_context(batch_size, seed))

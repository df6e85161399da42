"""A tiny decoder fine-tuning setup shared by its tests and the multi-device subprocess: the tiny
random llama of tiny_decoder on the bundled SQuAD questions' gold blocks."""

import dataclasses

from orqa_realm.data.blocks import StoreSource
from orqa_realm.tasks.lm_finetune import LMFinetuneConfig, LMFinetuneTask
from orqa_realm.tasks.pairs import TrainingPairs
from tests.tasks.tiny_ict import tiny_context


def tiny_lm_finetune_task(block_store: str, bert_dir: str, decoder_dir: str, qa_dataset: str,
                          batch_size: int = 8, seed: int = 0, **overrides) -> LMFinetuneTask:
  """`overrides`: LMFinetuneConfig fields."""
  config = LMFinetuneConfig(source=StoreSource(block_store=block_store, bert=bert_dir),
                            pairs=TrainingPairs(qa_dataset=qa_dataset, negative_depth=20),
                            decoder=decoder_dir, max_passage_tokens=48, max_length=128)
  return LMFinetuneTask(dataclasses.replace(config, **overrides), tiny_context(batch_size, seed))

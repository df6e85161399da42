"""A tiny ART setup shared by its tests and the multi-device subprocess: the tiny random BERT of
tiny_ict as the retriever, the tiny random llama of tiny_decoder as the teacher, over the SQuAD
block store."""

import dataclasses

from orqa_realm.encode.question_likelihood import QuestionLikelihoodSettings
from orqa_realm.tasks.art import ARTConfig, ARTTask
from tests.conftest import DEMO_SQUAD
from tests.tasks.tiny_ict import TINY_RETRIEVER, tiny_context, tiny_source


def tiny_art_task(block_store: str, bert_dir: str, decoder_dir: str, batch_size: int = 8,
                  seed: int = 0, **overrides) -> ARTTask:
  """`overrides`: ARTConfig fields."""
  config = ARTConfig(source=tiny_source(block_store, bert_dir), retriever=TINY_RETRIEVER,
                     qa_dataset=f"squad:{DEMO_SQUAD}", candidates=4,
                     teacher=QuestionLikelihoodSettings(decoder=decoder_dir, passage_tokens=40,
                                                        question_tokens=16))
  return ARTTask(dataclasses.replace(config, **overrides), tiny_context(batch_size, seed))

"""A tiny REALM setup shared by its tests and the multi-device subprocess: the tiny random BERT of
tiny_ict for both the retriever and the knowledge-augmented encoder, over the salient-span SQuAD
store of conftest."""

import dataclasses

from orqa_realm.tasks.realm import REALMConfig, REALMTask
from tests.tasks.tiny_ict import TINY_RETRIEVER, tiny_context, tiny_source


def tiny_realm_task(block_store: str, bert_dir: str, batch_size: int = 8, seed: int = 0,
                    **overrides) -> REALMTask:
  """`overrides`: REALMConfig fields."""
  config = REALMConfig(source=tiny_source(block_store, bert_dir),
                       retriever=dataclasses.replace(TINY_RETRIEVER, query_length=24),
                       num_candidates=4, max_masks=6, document_length=40)
  return REALMTask(dataclasses.replace(config, **overrides), tiny_context(batch_size, seed))

"""A tiny REALM setup shared by its tests and the multi-device subprocess: the tiny random BERT of
tiny_ict for both the retriever and the knowledge-augmented encoder, over the salient-span SQuAD
store of conftest."""

import jax.numpy as jnp

from orqa_realm.modeling import mlm
from orqa_realm.modeling.retriever import RetrieverConfig
from orqa_realm.tasks.realm import REALMConfig, REALMTask
from tests.tasks.tiny_ict import TINY_BERT


def tiny_realm_task(block_store: str, bert_dir: str, batch_size: int = 8,
                    **overrides) -> REALMTask:
  config = dict(block_store=block_store,
                retriever=RetrieverConfig(TINY_BERT, projection_size=16, share_encoders=False),
                knowledge_encoder=mlm.KnowledgeEncoderConfig(TINY_BERT), bert_dir=bert_dir,
                batch_size=batch_size, num_candidates=4, max_masks=6, query_length=24,
                block_length=48, document_length=40, dtype=jnp.float32)
  config.update(overrides)
  return REALMTask(REALMConfig(**config))

"""Tiny Contriever, SimCSE and Spider setups shared by their tests and the multi-device
subprocess: the tiny random BERT of tiny_ict, one shared encoder, mean-pooled, over a SQuAD
store."""

import dataclasses

from orqa_realm.tasks.contrastive import (ContrieverConfig, ContrieverTask, HeldOutBlocks,
                                          SimCSEConfig, SimCSETask)
from orqa_realm.tasks.spider import SpiderConfig, SpiderTask
from tests.tasks.tiny_ict import TINY_RETRIEVER, tiny_context, tiny_source

TINY_SHARED_RETRIEVER = dataclasses.replace(TINY_RETRIEVER, share_encoders=True, pooling="mean",
                                            score_scale=5.0)


def tiny_contrastive_task(kind: str, block_store: str, bert_dir: str, batch_size: int = 8,
                          seed: int = 0, **overrides) -> ContrieverTask | SimCSETask:
  """`kind`: "contriever" or "simcse"; `overrides`: its config's fields."""
  config_class, task_class = dict(contriever=(ContrieverConfig, ContrieverTask),
                                  simcse=(SimCSEConfig, SimCSETask))[kind]
  config = config_class(source=tiny_source(block_store, bert_dir),
                        retriever=TINY_SHARED_RETRIEVER, held_out=HeldOutBlocks(0.1, 2))
  return task_class(dataclasses.replace(config, **overrides), tiny_context(batch_size, seed))


def tiny_spider_task(block_store: str, bert_dir: str, batch_size: int = 8, seed: int = 0,
                     **overrides) -> SpiderTask:
  """Spider over a SQuAD store, whose articles (titles) are Spider's documents."""
  config = SpiderConfig(source=tiny_source(block_store, bert_dir), retriever=TINY_SHARED_RETRIEVER,
                        group_by="title", query_window=12, held_out=HeldOutBlocks(0.1, 2))
  return SpiderTask(dataclasses.replace(config, **overrides), tiny_context(batch_size, seed))

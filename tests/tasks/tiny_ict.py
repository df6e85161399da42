"""A tiny ICT setup shared by the training tests and their multi-device subprocess.

The tiny BERT keeps MiniLM's vocabulary and tokenizer (so the demo block store fits it) with small
random layers, so that many short runs fit in a CI budget.
"""

import dataclasses
import json
import os
import shutil

from orqa_realm.modeling.bert import BertConfig
from orqa_realm.modeling.retriever import RetrieverConfig
from orqa_realm.tasks.base import TaskContext
from orqa_realm.tasks.common import StoreAndBert
from orqa_realm.tasks.ict import ICTConfig, ICTTask

TINY_BERT = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, max_position_embeddings=128)


def make_tiny_bert_dir(minilm_dir: str, target: str, config: BertConfig = TINY_BERT) -> str:
  """A Hugging Face directory with MiniLM's tokenizer files, the tiny architecture and random
  weights (written by PyTorch `transformers`, seeded), as a pretrained model's would be."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  os.makedirs(target, exist_ok=True)
  for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
    shutil.copy(os.path.join(minilm_dir, name), os.path.join(target, name))
  torch.manual_seed(0)
  transformers.BertModel(transformers.BertConfig(**config.to_dict())).save_pretrained(
      target, safe_serialization=True)
  with open(os.path.join(target, "config.json"), "w", encoding="utf-8") as f:
    json.dump(dict(config.to_dict(), model_type="bert"), f)
  return target


# The tiny retriever every task test trains: 16-dimensional embeddings of short inputs.
TINY_RETRIEVER = RetrieverConfig(TINY_BERT, projection_size=16, query_length=16, block_length=48)


def tiny_context(batch_size: int = 8, seed: int = 0) -> TaskContext:
  return TaskContext(batch_size=batch_size, seed=seed, dtype="float32", remat="none")


def tiny_source(block_store: str, bert_dir: str, from_scratch: bool = True) -> StoreAndBert:
  """The store and the tiny BERT directory: freshly initialised layers (`from_scratch`), or the
  directory's own random weights."""
  return StoreAndBert(block_store=block_store, bert=bert_dir, from_scratch=from_scratch)


def tiny_ict_task(block_store: str, bert_dir: str, batch_size: int = 8, seed: int = 0,
                  **overrides) -> ICTTask:
  """`overrides`: ICTConfig fields."""
  config = ICTConfig(source=tiny_source(block_store, bert_dir), retriever=TINY_RETRIEVER,
                     heldout_fraction=0.1, eval_batches=2)
  return ICTTask(dataclasses.replace(config, **overrides), tiny_context(batch_size, seed))

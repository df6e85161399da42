"""A tiny ICT setup shared by the training tests and their multi-device subprocess.

The tiny BERT keeps MiniLM's vocabulary and tokenizer (so the demo block store fits it) with small
random layers, so that many short runs fit in a CI budget.
"""

import json
import os
import shutil

import jax.numpy as jnp

from orqa_realm.modeling.bert import BertConfig
from orqa_realm.modeling.retriever import RetrieverConfig
from orqa_realm.tasks.ict import ICTConfig, ICTTask

TINY_BERT = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, max_position_embeddings=128)


def make_tiny_bert_dir(minilm_dir: str, target: str) -> str:
  """A Hugging Face directory with MiniLM's tokenizer files and the tiny architecture."""
  os.makedirs(target, exist_ok=True)
  for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
    shutil.copy(os.path.join(minilm_dir, name), os.path.join(target, name))
  with open(os.path.join(target, "config.json"), "w", encoding="utf-8") as f:
    json.dump(dict(TINY_BERT.to_dict(), model_type="bert"), f)
  return target


def tiny_ict_task(block_store: str, bert_dir: str, batch_size: int = 8, **overrides) -> ICTTask:
  config = dict(block_store=block_store, retriever=RetrieverConfig(TINY_BERT, projection_size=16),
                bert_dir=bert_dir, batch_size=batch_size, query_length=16, block_length=48,
                heldout_fraction=0.1, eval_batches=2, dtype=jnp.float32)
  config.update(overrides)
  return ICTTask(ICTConfig(**config))

"""BERT forward throughput (block embedding): our Flax model vs PyTorch, same weights and inputs.

    python benchmarks/bert_forward.py [--batch_size=32 --length=128 --iterations=10]

Prints sequences/s for Flax (f32, bf16) and PyTorch (f32, bf16 autocast), the ratio to PyTorch bf16
and the achieved GFLOP/s. Inputs are real SQuAD blocks from the bundled demo data. Absolute times on
shared machines are noisy; the ratios within one run are what to compare.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Blocks per forward pass.")
_LENGTH = flags.DEFINE_integer("length", 128, "Wordpieces per block.")
_ITERATIONS = flags.DEFINE_integer("iterations", 10, "Timed forward passes per configuration.")
_MODEL = flags.DEFINE_string("model", "minilm", "Hugging Face BERT directory or packaged name.")

DEMO_SQUAD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "demo_data", "squad", "dev-v1.1.public36.json.gz")


def forward_flops(config, length: int) -> float:
  """Matmul FLOPs of one sequence's forward pass (2 per multiply-add)."""
  hidden, inner = config.hidden_size, config.intermediate_size
  per_layer = 2 * length * (4 * hidden * hidden + 2 * hidden * inner) + 2 * 2 * length * length * hidden
  return config.num_hidden_layers * per_layer + 2 * hidden * hidden  # + pooler


def time_calls(function, iterations: int) -> float:
  """Seconds per call after two warm-up calls (compilation, allocator warm-up)."""
  function()
  function()
  started = time.perf_counter()
  for _ in range(iterations):
    function()
  return (time.perf_counter() - started) / iterations


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  import transformers

  from orqa_realm.data.blocks import build_block_store
  from orqa_realm.data.documents import load_documents
  from orqa_realm.data.tokenization import Tokenizer
  from orqa_realm.modeling.bert import BertModel
  from orqa_realm.modeling.hf_import import load_hf_bert
  from orqa_realm.modeling.pretrained import resolve_model_dir

  import tempfile

  model_dir = resolve_model_dir(_MODEL.value)
  batch_size, length = _BATCH_SIZE.value, _LENGTH.value
  with tempfile.TemporaryDirectory() as scratch:
    store = build_block_store(load_documents(f"squad:{DEMO_SQUAD}"), Tokenizer(model_dir),
                              os.path.join(scratch, "blocks"))
    batch = store.encode(range(batch_size), max_length=length)

  hf = load_hf_bert(model_dir)
  results = []
  for name, dtype in [("flax f32", jnp.float32), ("flax bf16", jnp.bfloat16)]:
    model = BertModel(hf.config, dtype=dtype)
    params = jax.device_put(hf.params)
    inputs = [jax.device_put(array) for array in batch]
    forward = jax.jit(lambda p, ids, seg, mask, model=model: model.apply(
        {"params": p}, ids, seg, mask).pooled_output)
    seconds = time_calls(lambda: forward(params, *inputs).block_until_ready(), _ITERATIONS.value)
    results.append((name, seconds))

  torch.set_num_threads(os.cpu_count())
  torch_model = transformers.BertModel.from_pretrained(model_dir).eval()
  torch_inputs = dict(input_ids=torch.from_numpy(batch.token_ids.astype(np.int64)),
                      token_type_ids=torch.from_numpy(batch.segment_ids.astype(np.int64)),
                      attention_mask=torch.from_numpy(batch.input_mask.astype(np.int64)))

  def torch_forward(autocast: bool):
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
      return torch_model(**torch_inputs).pooler_output

  for name, autocast in [("pytorch f32", False), ("pytorch bf16 autocast", True)]:
    results.append((name, time_calls(lambda: torch_forward(autocast), _ITERATIONS.value)))

  reference = dict(results)["pytorch bf16 autocast"]
  flops = forward_flops(hf.config, length) * batch_size
  print(f"BERT forward, {hf.config.num_hidden_layers} layers x {hf.config.hidden_size}, batch "
        f"{batch_size} x {length} tokens, {jax.devices()[0].platform}, {os.cpu_count()} cores, "
        f"jax {jax.__version__}, torch {torch.__version__}")
  print(f"| {'implementation':<22} | {'sequences/s':>11} | {'vs PyTorch bf16':>15} | {'GFLOP/s':>8} |")
  print(f"|{'-' * 24}|{'-' * 12}:|{'-' * 16}:|{'-' * 9}:|")
  for name, seconds in results:
    print(f"| {name:<22} | {batch_size / seconds:>11.1f} | {reference / seconds:>14.2f}x "
          f"| {flops / seconds / 1e9:>8.1f} |")


if __name__ == "__main__":
  app.run(main)

"""BERT forward throughput (block embedding): our Flax model vs PyTorch, same weights and inputs.

    python benchmarks/bert_forward.py [--batch_size=32 --length=128 --iterations=10]

Prints sequences/s for Flax (f32, bf16) and PyTorch (f32, bf16 autocast), the ratio to PyTorch bf16
and the achieved GFLOP/s. Inputs are real SQuAD blocks from the bundled demo data. Absolute times on
shared machines are noisy; the ratios within one run are what to compare.
"""

from __future__ import annotations

import os

from absl import app, flags

from common import DEMO_SQUAD, bert_forward_flops, print_table, time_calls

_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Blocks per forward pass.")
_LENGTH = flags.DEFINE_integer("length", 128, "Wordpieces per block.")
_ITERATIONS = flags.DEFINE_integer("iterations", 10, "Timed forward passes per configuration.")
_MODEL = flags.DEFINE_string("model", "minilm", "Hugging Face BERT directory or packaged name.")


def main(argv):
  del argv
  import tempfile

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
  from orqa_realm.data.pretrained import resolve_model_dir

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
  flops = bert_forward_flops(hf.config, length) * batch_size
  print_table(
      f"BERT forward, {hf.config.num_hidden_layers} layers x {hf.config.hidden_size}, batch "
      f"{batch_size} x {length} tokens, {jax.devices()[0].platform}, {os.cpu_count()} cores, "
      f"jax {jax.__version__}, torch {torch.__version__}",
      ["implementation", "sequences/s", "vs PyTorch bf16", "GFLOP/s"],
      [[name, f"{batch_size / seconds:.1f}", f"{reference / seconds:.2f}x",
        f"{flops / seconds / 1e9:.1f}"] for name, seconds in results])


if __name__ == "__main__":
  app.run(main)

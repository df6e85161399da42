"""BERT forward throughput (block embedding): our Flax model vs PyTorch, same weights and inputs.

    python benchmarks/bert_forward.py [--batch_size=32 --length=128 --iterations=10]

Prints sequences/s for Flax (f32, bf16; each of the CPU's attention implementations, `batched` and
`per_sequence`) and PyTorch (f32, bf16 autocast; SDPA and eager attention), the ratio to the faster
PyTorch of the same dtype, and the achieved GFLOP/s. Inputs are real SQuAD blocks from the bundled
demo data. Absolute times on shared machines are noisy; the ratios within one run are what to
compare.
"""

from __future__ import annotations

import os

from absl import app, flags

from common import (DEMO_SQUAD, bert_forward_flops, machine_description, print_table,
                    time_calls)

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
  params = jax.device_put(hf.params)
  inputs = [jax.device_put(array) for array in batch]
  for dtype_name, dtype in [("f32", jnp.float32), ("bf16", jnp.bfloat16)]:
    for attention in ["batched", "per_sequence"]:
      model = BertModel(hf.config, dtype=dtype, attention=attention)
      forward = jax.jit(lambda p, ids, seg, mask, model=model: model.apply(
          {"params": p}, ids, seg, mask).pooled_output)
      seconds = time_calls(lambda: forward(params, *inputs).block_until_ready(),
                           _ITERATIONS.value)
      results.append((f"flax {dtype_name}, {attention} attention", dtype_name, seconds))

  torch.set_num_threads(os.cpu_count())
  torch_inputs = dict(input_ids=torch.from_numpy(batch.token_ids.astype(np.int64)),
                      token_type_ids=torch.from_numpy(batch.segment_ids.astype(np.int64)),
                      attention_mask=torch.from_numpy(batch.input_mask.astype(np.int64)))

  for implementation in ["sdpa", "eager"]:
    torch_model = transformers.BertModel.from_pretrained(
        model_dir, attn_implementation=implementation).eval()

    def torch_forward(autocast: bool, torch_model=torch_model):
      with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return torch_model(**torch_inputs).pooler_output

    for dtype_name, autocast in [("f32", False), ("bf16", True)]:
      results.append((f"pytorch {dtype_name}{' autocast' * autocast}, {implementation} attention",
                      dtype_name, time_calls(lambda: torch_forward(autocast), _ITERATIONS.value)))

  fastest_pytorch = {dtype_name: min(seconds for name, d, seconds in results
                                     if name.startswith("pytorch") and d == dtype_name)
                     for dtype_name in ("f32", "bf16")}
  flops = bert_forward_flops(hf.config, length) * batch_size
  print_table(
      f"BERT forward, {hf.config.num_hidden_layers} layers x {hf.config.hidden_size}, batch "
      f"{batch_size} x {length} tokens; {machine_description()}; {jax.devices()[0].platform}, "
      f"jax {jax.__version__}, torch {torch.__version__}",
      ["implementation", "sequences/s", "vs fastest PyTorch, same dtype", "GFLOP/s"],
      [[name, f"{batch_size / seconds:.1f}", f"{fastest_pytorch[dtype_name] / seconds:.2f}x",
        f"{flops / seconds / 1e9:.1f}"] for name, dtype_name, seconds in results])


if __name__ == "__main__":
  app.run(main)

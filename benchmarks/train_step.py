"""ICT training step: our Flax dual encoder vs the same model and shapes in PyTorch, one script.

    python benchmarks/train_step.py [--batch_size=32 --query_length=32 --block_length=128]

Ours is the exact step the training loop runs (`train.make_train_step`: forward, in-batch softmax
over the batch, backward, clipping, AdamW). PyTorch runs the same architecture (two BertModels
from the same weights, dense(128) + LayerNorm + dropout on the pooled output), loss, clipping and
AdamW, in float32 and with bf16 autocast. Prints query-block pairs/s, ratios, and MFU (3x forward
FLOPs per training step) against the best float32 matmul rate measured here (JAX or PyTorch).
"""

from __future__ import annotations

import os
import tempfile

from absl import app, flags

from common import DEMO_SQUAD, bert_forward_flops, measured_peak_flops, print_table, time_calls
from orqa_realm import train as train_lib
from orqa_realm.tasks import retriever_flags

# The trainer's and retriever's own flags (--batch_size, --query_length, --block_length, --bert)
# set the shapes and the model.
flags.FLAGS.set_default("query_length", 32)
flags.FLAGS.set_default("block_length", 128)
_QUERY_LENGTH, _BLOCK_LENGTH, _MODEL = (retriever_flags.QUERY_LENGTH, retriever_flags.BLOCK_LENGTH,
                                        retriever_flags.BERT)
_ITERATIONS = flags.DEFINE_integer("iterations", 5, "Timed steps per configuration.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Our compute dtypes to time.")


def flax_step_seconds(store_dir, model_dir, hf, batch_size, dtype_name, remat) -> float:
  import jax
  import jax.numpy as jnp

  from orqa_realm.modeling.retriever import RetrieverConfig
  from orqa_realm.tasks.ict import ICTConfig, ICTTask

  task = ICTTask(ICTConfig(
      block_store=store_dir, retriever=RetrieverConfig(hf.config), bert_dir=model_dir,
      batch_size=batch_size, query_length=_QUERY_LENGTH.value, block_length=_BLOCK_LENGTH.value,
      heldout_fraction=0.0, eval_batches=0, dtype=jnp.dtype(dtype_name), remat=remat), hf.params)
  options = train_lib.TrainOptions(workdir="", num_train_steps=1000, batch_size=batch_size)
  optimizer = train_lib.make_optimizer(options)
  params = jax.device_put(task.init_params(jax.random.key(0)))
  state = train_lib.TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
  step = jax.jit(train_lib.make_train_step(task, optimizer, train_lib.learning_rate_schedule(options),
                                           jax.random.key(1)), donate_argnums=(0,))
  batch = jax.device_put(task.train_batch(0))

  def run():
    nonlocal state
    state, metrics = step(state, batch)
    metrics["loss"].block_until_ready()

  return time_calls(run, _ITERATIONS.value)


def torch_step_seconds(model_dir, batch, autocast: bool) -> float:
  import numpy as np
  import torch
  import transformers

  class Tower(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.bert = transformers.BertModel.from_pretrained(model_dir)
      hidden = self.bert.config.hidden_size
      self.projection = torch.nn.Linear(hidden, 128)
      self.layer_norm = torch.nn.LayerNorm(128, eps=1e-12)
      self.dropout = torch.nn.Dropout(0.1)

    def forward(self, tokens):
      pooled = self.bert(input_ids=tokens[0], token_type_ids=tokens[1],
                         attention_mask=tokens[2]).pooler_output
      return self.dropout(self.layer_norm(self.projection(pooled)))

  towers = torch.nn.ModuleList([Tower(), Tower()]).train()
  optimizer = torch.optim.AdamW(towers.parameters(), lr=1e-4, weight_decay=0.01, eps=1e-6)
  as_torch = lambda tokens: [torch.from_numpy(np.asarray(a, dtype=np.int64)) for a in tokens]
  queries, blocks = as_torch(batch.queries), as_torch(batch.blocks)
  labels = torch.arange(len(queries[0]))

  def run():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
      logits = towers[0](queries) @ towers[1](blocks).T
    loss = torch.nn.functional.cross_entropy(logits.float(), labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(towers.parameters(), 1.0)
    optimizer.step()

  return time_calls(run, _ITERATIONS.value)


def main(argv):
  del argv
  import jax
  import torch

  from orqa_realm.data.blocks import build_block_store
  from orqa_realm.data.documents import load_documents
  from orqa_realm.data.tokenization import Tokenizer
  from orqa_realm.modeling.hf_import import load_hf_bert
  from orqa_realm.data.pretrained import resolve_model_dir
  from orqa_realm.tasks.ict import ICTInputs

  torch.set_num_threads(os.cpu_count())
  model_dir = resolve_model_dir(_MODEL.value)
  hf = load_hf_bert(model_dir)
  batch_size = flags.FLAGS.batch_size
  results = []
  with tempfile.TemporaryDirectory() as scratch:
    store_dir = os.path.join(scratch, "blocks")
    build_block_store(load_documents(f"squad:{DEMO_SQUAD}"), Tokenizer(model_dir), store_dir)
    for dtype_name in _DTYPES.value:
      results.append((f"flax {dtype_name}",
                      flax_step_seconds(store_dir, model_dir, hf, batch_size, dtype_name, False)))
    from orqa_realm.data.blocks import BlockStore
    from orqa_realm.data.ict import ICTSampler

    sampled = ICTSampler(BlockStore(store_dir), batch_size=batch_size,
                         query_length=_QUERY_LENGTH.value,
                         block_length=_BLOCK_LENGTH.value).batch(0)
    batch = ICTInputs(sampled.queries, sampled.blocks)
  results.append(("pytorch f32", torch_step_seconds(model_dir, batch, autocast=False)))
  results.append(("pytorch bf16 autocast", torch_step_seconds(model_dir, batch, autocast=True)))

  peaks = measured_peak_flops()
  peak = max(peaks.values())
  step_flops = 3 * batch_size * (bert_forward_flops(hf.config, _QUERY_LENGTH.value)
                                 + bert_forward_flops(hf.config, _BLOCK_LENGTH.value))
  by_name = dict(results)
  print_table(
      f"ICT train step, dual encoder {hf.config.num_hidden_layers} x {hf.config.hidden_size}, "
      f"{batch_size} queries x {_QUERY_LENGTH.value} + {batch_size} blocks x "
      f"{_BLOCK_LENGTH.value} tokens; {jax.devices()[0].platform}, {os.cpu_count()} cores; "
      "measured f32 matmul peak " + ", ".join(f"{name} {value / 1e9:.0f}"
                                               for name, value in peaks.items()) + " GFLOP/s",
      ["implementation", "pairs/s", "vs PyTorch bf16", "vs PyTorch f32", "MFU (f32 peak)"],
      [[name, f"{batch_size / seconds:.2f}", f"{by_name['pytorch bf16 autocast'] / seconds:.2f}x",
        f"{by_name['pytorch f32'] / seconds:.2f}x", f"{step_flops / seconds / peak:.1%}"]
       for name, seconds in results])


if __name__ == "__main__":
  app.run(main)

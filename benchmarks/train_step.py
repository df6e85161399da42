"""ICT training step: our Flax dual encoder vs the same model and shapes in PyTorch, one script.

    python benchmarks/train_step.py [--batch_size=32 --query_length=32 --block_length=128]

Ours is the exact step the training loop runs (`training.loop.make_train_step`: forward, in-batch
softmax over the batch, backward, clipping, AdamW). PyTorch runs the same architecture (two
BertModels from the same weights, dense(128) + LayerNorm + dropout on the pooled output), loss,
clipping and AdamW, in float32 and with bf16 autocast. Ours runs each of `--dtypes` with each of
`--remat_policies`. Prints query-block pairs/s, ratios, and MFU (3x forward FLOPs per training
step, recomputation not counted) against the best float32 matmul rate measured here (JAX or
PyTorch).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import tempfile

from absl import flags

from common import (DEMO_SQUAD, bert_forward_flops, measured_peak_flops, print_table,
                    refuse_flags, time_calls)
from orqa_realm import cli
from orqa_realm.core.config import FlagBinder
from orqa_realm.modeling import partitioning
from orqa_realm.modeling.retriever import RetrieverConfig
from orqa_realm.tasks.ict import ICTConfig
from orqa_realm.training import loop

# The trainer's own flags set the shapes and the model: --batch_size (the loop's), --bert,
# --query_length and --block_length (the ICT task's; 32 and 128 by default here). The rest is
# fixed: the architecture and optimizer the PyTorch side reproduces, and every block trained on.
SETTINGS = FlagBinder("benchmarks/train_step.py")
SETTINGS.bind("loop", loop.TrainConfig)
SETTINGS.bind("task ict", ICTConfig,
              ICTConfig(retriever=RetrieverConfig(query_length=32, block_length=128)))
_READ = frozenset({"batch_size", "bert", "query_length", "block_length"})
_ITERATIONS = flags.DEFINE_integer("iterations", 5, "Timed steps per configuration.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Our compute dtypes to time.")
_REMAT_POLICIES = flags.DEFINE_list(
    "remat_policies", ["none", "full"], "Our rematerialisation policies to time (--remat's "
    "values): on CPU recomputing can beat stacking every layer's activations.")


def flax_step_seconds(store_dir: str, task_config: ICTConfig, train_config: loop.TrainConfig,
                      dtype_name: str, remat: str) -> float:
  import jax
  import jax.numpy as jnp

  from orqa_realm.core import parallel
  from orqa_realm.tasks.base import StepContext, TaskContext
  from orqa_realm.tasks.ict import ICTTask

  task_config = dataclasses.replace(
      task_config, source=dataclasses.replace(task_config.source, block_store=store_dir),
      heldout_fraction=0.0, eval_batches=0)
  task = ICTTask(task_config, TaskContext(train_config.batch_size, train_config.seed, dtype_name,
                                          remat=remat))
  optimizer = loop.make_optimizer(train_config)
  params = jax.device_put(partitioning.unbox(task.init_params(jax.random.key(0))))
  state = loop.TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
  step = jax.jit(loop.make_train_step(task, optimizer, loop.learning_rate_schedule(train_config),
                                      jax.random.key(1)), donate_argnums=(0,))
  batch = jax.device_put(task.train_batch(0, StepContext(parallel.make_mesh())))

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


def main():
  bound = SETTINGS.group("loop").flag_names | SETTINGS.group("task ict").flag_names
  refuse_flags(SETTINGS, bound - _READ, "it times a fixed ICT step against the same one in "
               "PyTorch (--dtypes sets our compute dtypes)")

  import jax
  import torch

  from orqa_realm.data.blocks import BlockStore, build_block_store
  from orqa_realm.data.documents import load_documents
  from orqa_realm.data.ict import ICTSampler
  from orqa_realm.data.tokenization import Tokenizer
  from orqa_realm.modeling.hf_import import load_hf_bert
  from orqa_realm.tasks.ict import ICTInputs

  torch.set_num_threads(os.cpu_count())
  train_config, task_config = SETTINGS.build("loop"), SETTINGS.build("task ict")
  query_length = task_config.retriever.query_length
  block_length = task_config.retriever.block_length
  model_dir = task_config.source.bert_dir()
  hf = load_hf_bert(model_dir)
  batch_size = train_config.batch_size
  results = []
  with tempfile.TemporaryDirectory() as scratch:
    store_dir = os.path.join(scratch, "blocks")
    build_block_store(load_documents(f"squad:{DEMO_SQUAD}"), Tokenizer(model_dir), store_dir)
    for dtype_name, remat in itertools.product(_DTYPES.value, _REMAT_POLICIES.value):
      results.append((f"flax {dtype_name}, remat {remat}",
                      flax_step_seconds(store_dir, task_config, train_config, dtype_name,
                                        remat)))
    sampled = ICTSampler(BlockStore(store_dir), batch_size=batch_size, query_length=query_length,
                         block_length=block_length).batch(0)
    batch = ICTInputs(sampled.queries, sampled.blocks)
  results.append(("pytorch f32", torch_step_seconds(model_dir, batch, autocast=False)))
  results.append(("pytorch bf16 autocast", torch_step_seconds(model_dir, batch, autocast=True)))

  peaks = measured_peak_flops()
  peak = max(peaks.values())
  step_flops = 3 * batch_size * (bert_forward_flops(hf.config, query_length)
                                 + bert_forward_flops(hf.config, block_length))
  by_name = dict(results)
  print_table(
      f"ICT train step, dual encoder {hf.config.num_hidden_layers} x {hf.config.hidden_size}, "
      f"{batch_size} queries x {query_length} + {batch_size} blocks x "
      f"{block_length} tokens; {jax.devices()[0].platform}, {os.cpu_count()} cores; "
      "measured f32 matmul peak " + ", ".join(f"{name} {value / 1e9:.0f}"
                                               for name, value in peaks.items()) + " GFLOP/s",
      ["implementation", "pairs/s", "vs PyTorch bf16", "vs PyTorch f32", "MFU (f32 peak)"],
      [[name, f"{batch_size / seconds:.2f}", f"{by_name['pytorch bf16 autocast'] / seconds:.2f}x",
        f"{by_name['pytorch f32'] / seconds:.2f}x", f"{step_flops / seconds / peak:.1%}"]
       for name, seconds in results])


if __name__ == "__main__":
  cli.run(main, SETTINGS)

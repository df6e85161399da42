"""Compile time and step time of a deep BERT: layers under `nn.scan` against the Python loop.

    python benchmarks/scan_layers.py [--layers=24 --hidden=1024 --batch_size=2 --length=64]

One training step (forward, backward, AdamW) of a randomly initialised BERT of the given depth
and width (24 x 1024 is BERT-large), jitted with each layout and rematerialisation policy. The
loop, which unrolls every layer into the program, is the reference: a scan compiles one layer
whatever the depth. Prints the seconds spent tracing and lowering, compiling, and per step.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

from absl import app, flags

from common import machine_description, print_table

_LAYERS = flags.DEFINE_integer("layers", 24, "BERT layers.")
_HIDDEN = flags.DEFINE_integer("hidden", 1024, "Hidden size (heads of 64, MLP of 4x).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 2, "Sequences per step.")
_LENGTH = flags.DEFINE_integer("length", 64, "Wordpieces per sequence.")
_ITERATIONS = flags.DEFINE_integer("iterations", 3, "Timed steps per configuration.")
_REMAT = flags.DEFINE_list("remat", ["none", "full"], "Rematerialisation policies to time.")


def measure(config, remat: str, batch) -> tuple[float, float, float]:
  """(trace + lower seconds, compile seconds, median step seconds) of one training step."""
  import flax.linen as nn
  import jax
  import optax

  from orqa_realm.modeling.bert import BertModel

  model = BertModel(config, remat=remat)
  params = nn.unbox(jax.jit(lambda: model.init(jax.random.key(0), *batch))()["params"])
  optimizer = optax.adamw(1e-4)

  def step(params, opt_state, batch):
    def loss(params):
      output = model.apply({"params": params}, *batch, deterministic=False,
                           rngs={"dropout": jax.random.key(1)})
      return (output.pooled_output ** 2).mean()

    grads = jax.grad(loss)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state = optimizer.init(params)
  started = time.perf_counter()
  lowered = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, batch)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  compiled_at = time.perf_counter()
  times = []
  for _ in range(_ITERATIONS.value + 1):  # the first call warms up allocations
    started_step = time.perf_counter()
    params, opt_state = compiled(params, opt_state, batch)
    jax.block_until_ready(params)
    times.append(time.perf_counter() - started_step)
  return lowered_at - started, compiled_at - lowered_at, statistics.median(times[1:])


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp

  from orqa_realm.modeling.bert import BertConfig

  hidden = _HIDDEN.value
  base = BertConfig(hidden_size=hidden, num_hidden_layers=_LAYERS.value,
                    num_attention_heads=hidden // 64, intermediate_size=4 * hidden)
  shape = (_BATCH_SIZE.value, _LENGTH.value)
  token_ids = jax.random.randint(jax.random.key(2), shape, 0, base.vocab_size)
  batch = (token_ids, jnp.zeros(shape, jnp.int32), jnp.ones(shape, jnp.int32))
  rows = []
  for remat in _REMAT.value:
    for name, scan in (("loop", False), ("scan", True)):
      lower, compile_, step = measure(dataclasses.replace(base, scan_layers=scan), remat, batch)
      rows.append([f"{name}, remat {remat}", f"{lower:.1f}", f"{compile_:.1f}",
                   f"{lower + compile_:.1f}", f"{step:.2f}"])
  print_table(
      f"One training step of a {_LAYERS.value}-layer BERT (hidden {hidden}), batch "
      f"{shape[0]} x {shape[1]}; {machine_description()}; jax {jax.__version__}",
      ["layers", "trace + lower s", "compile s", "total s", "step s"], rows)


if __name__ == "__main__":
  app.run(main)

"""BERT-base forward, ICT training step and exact search on an accelerator: ours (JAX) against
PyTorch bf16 with `scaled_dot_product_attention` on the same device, MFU and bandwidth.

    python benchmarks/accelerator.py                      # BERT-base, 288 tokens, batch 256
    python benchmarks/accelerator.py --layers=2 --hidden=64 --batch_size=8 --length=32 \\
        --search_rows=100000                              # a seconds-long check of the script

Prepared for the GPU machine a task may be lent (README "Benchmarks"); on CPU it runs the same
code at the sizes given. Random weights of the given size (12 x 768 with 12 heads and a 3072 MLP
is BERT-base); inputs of `--length` real tokens (no padding), so both sides do the same work.

  * forward: our `BertModel` in bfloat16 with each attention implementation that runs here
    ("batched", XLA's fusion; "cudnn", `jax.nn.dot_product_attention`'s flash attention, GPU
    only) against `transformers.BertModel` under bf16 autocast with SDPA;
  * ICT training step: two such towers, in-batch softmax over the batch, AdamW, our remat
    policies; PyTorch the same model, loss and optimizer, bf16 autocast;
  * exact search: `ExactSearcher` over `--search_rows` x 128 bfloat16 rows, reported as GB/s of
    embeddings scanned (rows x 128 x 2 bytes per query batch).

MFU is against the bf16 matmul rate measured here (an 8192^3 matmul, the best of JAX and PyTorch)
and, on a known GPU, the datasheet's dense bf16 peak; bandwidth against a measured device copy.
"""

from __future__ import annotations

import time

from absl import app, flags

from common import best_seconds, bert_forward_flops, machine_description, print_table

_LAYERS = flags.DEFINE_integer("layers", 12, "BERT layers.")
_HIDDEN = flags.DEFINE_integer("hidden", 768, "Hidden size (heads of 64, MLP of 4x).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Sequences per forward / pairs per step.")
_LENGTH = flags.DEFINE_integer("length", 288, "Tokens per sequence (queries take a ninth).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls (best kept) after one untimed call.")
_REMAT = flags.DEFINE_list("remat", ["none", "minimal"], "Our remat policies for the step.")
_SEARCH_ROWS = flags.DEFINE_integer("search_rows", 10_000_000, "Rows of the exact-search corpus.")
_SEARCH_QUERIES = flags.DEFINE_integer("search_queries", 4096, "Queries of the exact search.")

# Dense bf16 tensor-core peaks (datasheets, SXM parts) and HBM bandwidth, for the GPUs this
# project may be lent; others are reported against the measured rates only.
DATASHEET = {"H200": (989e12, 4.8e12), "H100": (989e12, 3.35e12), "A100": (312e12, 2.0e12)}


def datasheet(device_name: str) -> tuple[float, float] | None:
  return next((value for name, value in DATASHEET.items() if name in device_name), None)


def measured_rates(jax, jnp) -> tuple[float, float]:
  """(bf16 matmul FLOP/s, device copy bytes/s) measured here."""
  size = 8192 if jax.default_backend() != "cpu" else 2048
  a = jnp.ones((size, size), jnp.bfloat16)
  matmul = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=jnp.float32))
  flops = 2 * size ** 3 / best_seconds(lambda: matmul(a).block_until_ready(), 5)
  buffer = jnp.ones((256 << 20) // 4, jnp.float32)
  copy = jax.jit(lambda x: x + 1)
  bandwidth = 2 * buffer.nbytes / best_seconds(lambda: copy(buffer).block_until_ready(), 5)
  return flops, bandwidth


def bert_config():
  from orqa_realm.modeling.bert import BertConfig

  hidden = _HIDDEN.value
  return BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=_LAYERS.value,
                    num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden,
                    max_position_embeddings=max(512, _LENGTH.value))


def jax_inputs(jnp, np, batch_size: int, length: int, seed: int):
  token_ids = np.random.default_rng(seed).integers(1000, 29000, (batch_size, length))
  return (jnp.asarray(token_ids, jnp.int32), jnp.zeros((batch_size, length), jnp.int32),
          jnp.ones((batch_size, length), jnp.int32))


def our_forward_seconds(config, attention: str) -> float:
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np

  from orqa_realm.modeling.bert import BertModel, initial_params

  inputs = jax_inputs(jnp, np, _BATCH_SIZE.value, _LENGTH.value, 0)
  params = nn.unbox(initial_params(BertModel(config), jax.random.key(0), *inputs))
  model = BertModel(config, dtype=jnp.bfloat16, attention=attention)
  forward = jax.jit(lambda p, *x: model.apply({"params": p}, *x).pooled_output)
  return best_seconds(lambda: forward(params, *inputs).block_until_ready(), _REPEATS.value)


def our_step_seconds(config, remat: str) -> float:
  """One ICT-shaped step: query and block towers, in-batch softmax, AdamW, donated state."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from orqa_realm.modeling.bert import BertModel, initial_params

  batch_size, length = _BATCH_SIZE.value, _LENGTH.value
  queries = jax_inputs(jnp, np, batch_size, max(8, length // 9), 1)
  blocks = jax_inputs(jnp, np, batch_size, length, 2)
  init = lambda seed, x: nn.unbox(initial_params(BertModel(config), jax.random.key(seed), *x))
  params = {"query": init(0, queries), "block": init(1, blocks)}
  # Batched attention: cuDNN's has no attention dropout, which training applies.
  model = BertModel(config, dtype=jnp.bfloat16, remat=remat, attention="batched")
  optimizer = optax.adamw(1e-4, weight_decay=0.01)

  def loss(params, rng):
    encode = lambda p, x, key: model.apply({"params": p}, *x, deterministic=False,
                                           rngs={"dropout": key}).pooled_output
    keys = jax.random.split(rng)
    logits = encode(params["query"], queries, keys[0]) @ encode(params["block"], blocks,
                                                                keys[1]).T
    return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(batch_size)).mean()

  def step(params, opt_state, rng):
    grads = jax.grad(loss)(params, rng)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  step = jax.jit(step, donate_argnums=(0, 1))
  state = [params, optimizer.init(params)]

  def run():
    state[0], state[1] = step(state[0], state[1], jax.random.key(3))
    jax.block_until_ready(state)

  return best_seconds(run, _REPEATS.value)


def torch_seconds(config) -> dict[str, float]:
  """PyTorch bf16 autocast + SDPA forward and ICT step on the fastest device it has."""
  try:
    import torch
    import transformers
  except ImportError:
    return {}
  device = "cuda" if torch.cuda.is_available() else "cpu"
  hf_config = transformers.BertConfig(
      vocab_size=config.vocab_size, hidden_size=config.hidden_size,
      num_hidden_layers=config.num_hidden_layers,
      num_attention_heads=config.num_attention_heads,
      intermediate_size=config.intermediate_size,
      max_position_embeddings=config.max_position_embeddings, attn_implementation="sdpa")
  batch_size, length = _BATCH_SIZE.value, _LENGTH.value

  def inputs(count, tokens, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1000, 29000, (count, tokens), generator=generator).to(device)

  def synchronised(function):
    def run():
      function()
      if device == "cuda":
        torch.cuda.synchronize()
    return run

  blocks, queries = inputs(batch_size, length, 2), inputs(batch_size, max(8, length // 9), 1)
  model = transformers.BertModel(hf_config).to(device).eval()

  def forward():
    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16):
      model(input_ids=blocks).pooler_output

  results = {"forward": best_seconds(synchronised(forward), _REPEATS.value)}
  towers = torch.nn.ModuleList([transformers.BertModel(hf_config),
                                transformers.BertModel(hf_config)]).to(device).train()
  optimizer = torch.optim.AdamW(towers.parameters(), lr=1e-4, weight_decay=0.01)
  labels = torch.arange(batch_size, device=device)

  def step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16):
      logits = (towers[0](input_ids=queries).pooler_output
                @ towers[1](input_ids=blocks).pooler_output.T)
    torch.nn.functional.cross_entropy(logits.float(), labels).backward()
    optimizer.step()

  results["step"] = best_seconds(synchronised(step), _REPEATS.value)
  results["device"] = torch.cuda.get_device_name() if device == "cuda" else "cpu"
  return results


def search_rows(jax, jnp, np, bandwidth: float) -> list[list[str]]:
  """Exact bf16 search over `--search_rows` x 128: queries/s and GB/s scanned."""
  from orqa_realm.index.exact import ExactSearcher

  rng = np.random.default_rng(0)
  corpus = rng.standard_normal((_SEARCH_ROWS.value, 128), dtype=np.float32)
  queries = rng.standard_normal((_SEARCH_QUERIES.value, 128), dtype=np.float32)
  searcher = ExactSearcher(corpus, dtype=jnp.bfloat16, query_batch_size=1024)
  del corpus
  seconds = best_seconds(lambda: searcher.search(queries, 10), max(2, _REPEATS.value // 2))
  batches = -(-len(queries) // searcher.query_batch_size)
  scanned = batches * _SEARCH_ROWS.value * 128 * 2 / seconds
  return [[f"exact search, bf16, {_SEARCH_ROWS.value:,} x 128", f"{len(queries) / seconds:,.0f} q/s",
           f"{scanned / 1e9:,.1f} GB/s", f"{scanned / bandwidth:.0%} of measured copy"]]


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp
  import numpy as np

  config = bert_config()
  device = jax.devices()[0]
  device_name = getattr(device, "device_kind", device.platform)
  flops, bandwidth = measured_rates(jax, jnp)
  sheet = datasheet(device_name)
  attentions = ["batched"] + (["cudnn"] if jax.default_backend() == "gpu" else [])
  batch_size, length = _BATCH_SIZE.value, _LENGTH.value
  forward_flops = batch_size * bert_forward_flops(config, length)
  step_flops = 3 * batch_size * (bert_forward_flops(config, length)
                                 + bert_forward_flops(config, max(8, length // 9)))

  reference = torch_seconds(config)
  rows = []

  def row(name, seconds, work, items, unit, torch_key):
    ratio = f"{reference[torch_key] / seconds:.2f}x" if torch_key in reference else "-"
    mfu = f"{work / seconds / flops:.0%}" + (f" ({work / seconds / sheet[0]:.0%})" if sheet else "")
    rows.append([name, f"{items / seconds:,.1f} {unit}", ratio, mfu])

  for attention in attentions:
    row(f"ours forward, bf16, {attention} attention", our_forward_seconds(config, attention),
        forward_flops, batch_size, "seq/s", "forward")
  for remat in _REMAT.value:
    row(f"ours ICT step, bf16, remat {remat}", our_step_seconds(config, remat), step_flops,
        batch_size, "pairs/s", "step")
  if "forward" in reference:
    row(f"PyTorch forward, bf16 autocast + SDPA ({reference['device']})", reference["forward"],
        forward_flops, batch_size, "seq/s", "forward")
    row(f"PyTorch ICT step, bf16 autocast + SDPA ({reference['device']})", reference["step"],
        step_flops, batch_size, "pairs/s", "step")
  peak_note = f"; datasheet bf16 {sheet[0] / 1e12:.0f} TFLOP/s, HBM {sheet[1] / 1e12:.1f} TB/s" \
      if sheet else ""
  print_table(
      f"BERT {config.num_hidden_layers} x {config.hidden_size}, batch {batch_size} x {length} "
      f"tokens; {device_name} ({machine_description()}); jax {jax.__version__}; measured bf16 "
      f"matmul {flops / 1e12:.1f} TFLOP/s, copy {bandwidth / 1e9:.0f} GB/s{peak_note}",
      ["implementation", "throughput", "vs PyTorch", "MFU (datasheet)"], rows)
  started = time.perf_counter()
  search = search_rows(jax, jnp, np, bandwidth)
  print_table(f"Exact search ({time.perf_counter() - started:.0f} s with the build)",
              ["search", "queries/s", "scanned", "bandwidth"], search)


if __name__ == "__main__":
  app.run(main)

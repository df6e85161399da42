"""Helpers shared by the benchmark scripts: timing, FLOP counts, the machine's measured peak."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
DEMO_SQUAD = os.path.join(REPO_ROOT, "demo_data", "squad", "dev-v1.1.public36.json.gz")


def refuse_flags(settings, names: Iterable[str], reason: str) -> None:
  """Refuses any of the library flags `names` (bound by the `FlagBinder` `settings`) that was
  given: the benchmark fixes or sweeps that setting itself, and would otherwise ignore it."""
  from orqa_realm.core.errors import InputError

  for name in sorted(names):
    if settings.given(name):
      raise InputError(f"--{name} is not read by {settings.command}: {reason}", field=name)


def time_calls(function, iterations: int, warmup: int = 2) -> float:
  """Seconds per call after `warmup` calls (compilation, allocator warm-up)."""
  for _ in range(warmup):
    function()
  started = time.perf_counter()
  for _ in range(iterations):
    function()
  return (time.perf_counter() - started) / iterations


def bert_forward_flops(config, length: int) -> float:
  """Matmul FLOPs of one sequence's BERT forward pass (2 per multiply-add)."""
  hidden, inner = config.hidden_size, config.intermediate_size
  per_layer = (2 * length * (4 * hidden * hidden + 2 * hidden * inner)
               + 2 * 2 * length * length * hidden)
  return config.num_hidden_layers * per_layer + 2 * hidden * hidden  # + pooler


def best_seconds(function, repeats: int) -> float:
  """The fastest of `repeats` calls, after one untimed call (compilation, caches): for runs long
  enough that the minimum is a fair estimate of the undisturbed time."""
  function()
  times = []
  for _ in range(repeats):
    started = time.perf_counter()
    function()
    times.append(time.perf_counter() - started)
  return min(times)


def measured_peak_flops(size: int = 2048, iterations: int = 10,
                        include_bf16: bool = False) -> dict[str, float]:
  """FLOP/s of a large matmul in JAX and, when installed, PyTorch on this machine: float32, and
  with `include_bf16` also bf16 (float32 accumulation in JAX, as our models ask for).

  MFU is reported against the largest: the best this machine is seen to do, not the ceiling of
  one library's matmul.
  """
  import jax
  import jax.numpy as jnp

  dtypes = [("f32", jnp.float32)] + ([("bf16", jnp.bfloat16)] if include_bf16 else [])
  matmul = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
  peaks = {}
  for name, dtype in dtypes:
    a = jnp.ones((size, size), dtype)
    peaks[f"jax {name}"] = 2 * size ** 3 / time_calls(
        lambda: matmul(a, a).block_until_ready(), iterations)
  try:
    import torch
  except ImportError:
    return peaks
  for name, dtype in [("f32", torch.float32), ("bf16", torch.bfloat16)][:len(dtypes)]:
    b = torch.ones((size, size), dtype=dtype)
    peaks[f"torch {name}"] = 2 * size ** 3 / time_calls(lambda: torch.mm(b, b), iterations)
  return peaks


def machine_description() -> str:
  """The CPU model, its cores and the vector extensions that decide matmul speed (AVX-512,
  AVX-512 BF16, AMX), for a benchmark's title: machines vary, so only ratios within one run
  compare."""
  model, flags = "unknown CPU", set()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        name, _, value = line.partition(":")
        if name.strip() == "model name":
          model = value.strip()
        elif name.strip() == "flags":
          flags = set(value.split())
          break
  except OSError:
    pass
  extensions = [label for flag, label in [("avx2", "AVX2"), ("avx512f", "AVX-512"),
                                          ("avx512_bf16", "AVX-512 BF16"), ("amx_bf16", "AMX")]
                if flag in flags]
  return f"{model}, {os.cpu_count()} cores, {'/'.join(extensions) or 'no AVX2'}"


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
  """A Markdown table, ready to paste into the README."""
  print(title)
  widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(columns)]
  print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |")
  print("|" + "|".join("-" * (w + 1) + ("-" if i == 0 else ":") for i, w in enumerate(widths)) + "|")
  for row in rows:
    print("| " + " | ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                            for i, (cell, w) in enumerate(zip(row, widths))) + " |")


def clustered_vectors(num_rows: int, num_queries: int, dim: int, num_clusters: int,
                      spread: float, seed: int = 0):
  """([num_rows, dim], [num_queries, dim]) float32 draws from one Gaussian mixture."""
  import numpy as np

  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((num_clusters, dim), dtype=np.float32)

  def draw(count):
    return centres[rng.integers(num_clusters, size=count)] + spread * rng.standard_normal(
        (count, dim), dtype=np.float32)

  return draw(num_rows), draw(num_queries)


def recall_at_k(found, exact) -> float:
  import numpy as np

  k = exact.shape[1]
  return float(np.mean([len(np.intersect1d(a[:k], b)) / k for a, b in zip(found, exact)]))


def numpy_exact(corpus, queries, k: int, batch_size: int = 1024):
  """[num_queries, k] ids of the largest inner products, best first (float32 BLAS + partition)."""
  import numpy as np

  ids = np.empty((len(queries), k), np.int64)
  for start in range(0, len(queries), batch_size):
    scores = queries[start:start + batch_size] @ corpus.T  # [batch, num_rows]
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    ids[start:start + batch_size] = np.take_along_axis(top, order, axis=1)
  return ids

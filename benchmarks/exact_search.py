"""Exact maximum inner product search: ours (JAX, chunked running top-k) against faiss's flat
index and NumPy, on the same clustered vectors.

    python benchmarks/exact_search.py [--num_rows=500000 --dim=128 --num_queries=4096 --k=10]

Ours runs float32 and bfloat16 corpora, chunks of `--chunk_sizes` rows, and each chunk's top k
found through window maxima (`windowed_top_k`, the default) or by one `lax.top_k` over the
chunk (what the searcher did before). Every method answers the same queries; recall@k is
against exact float32 NumPy. Times are the best of `--repeats` passes after one untimed pass
(compilation).
"""

from __future__ import annotations

import os

from absl import app, flags

from common import (best_seconds, clustered_vectors, machine_description, numpy_exact,
                    print_table, recall_at_k)

_NUM_ROWS = flags.DEFINE_integer("num_rows", 500_000, "Rows of the synthetic corpus.")
_DIM = flags.DEFINE_integer("dim", 128, "Dimension of the vectors.")
_NUM_QUERIES = flags.DEFINE_integer("num_queries", 4096, "Queries per pass.")
_K = flags.DEFINE_integer("k", 10, "Neighbours per query; recall@k is reported.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed passes (best is kept).")
_CHUNK_SIZES = flags.DEFINE_list("chunk_sizes", ["8192", "32768"], "Our chunk sizes to time.")


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp

  from orqa_realm.index.exact import TOP_K_WINDOW, ExactSearcher

  corpus, queries = clustered_vectors(_NUM_ROWS.value, _NUM_QUERIES.value, _DIM.value,
                                      num_clusters=1000, spread=0.5)
  k, repeats, num_queries = _K.value, _REPEATS.value, len(queries)
  exact_ids = numpy_exact(corpus, queries, k)
  rows = [["NumPy (float32 BLAS + argpartition)", "float32",
           f"{num_queries / best_seconds(lambda: numpy_exact(corpus, queries, k), repeats):,.0f}",
           "1.0000"]]
  for dtype in (jnp.float32, jnp.bfloat16):
    for chunk_size in map(int, _CHUNK_SIZES.value):
      for window in (None, TOP_K_WINDOW):
        searcher = ExactSearcher(corpus, chunk_size=chunk_size, dtype=dtype, top_k_window=window)
        seconds = best_seconds(lambda s=searcher: s.search(queries, k), repeats)
        top_k = "one lax.top_k" if window is None else f"windows of {window}"
        rows.append([f"ours, {jnp.dtype(dtype).name}", f"chunk {chunk_size}, {top_k}",
                     f"{num_queries / seconds:,.0f}",
                     f"{recall_at_k(searcher.search(queries, k).ids, exact_ids):.4f}"])
        del searcher
  try:
    import faiss
  except ImportError:
    print("faiss not installed: its row is left out (pip install faiss-cpu)")
  else:
    faiss.omp_set_num_threads(os.cpu_count())
    flat = faiss.IndexFlatIP(corpus.shape[1])
    flat.add(corpus)
    seconds = best_seconds(lambda: flat.search(queries, k), repeats)
    rows.append([f"faiss {faiss.__version__} IndexFlatIP", "float32",
                 f"{num_queries / seconds:,.0f}",
                 f"{recall_at_k(flat.search(queries, k)[1], exact_ids):.4f}"])
  print_table(f"Exact search, {len(corpus):,} x {corpus.shape[1]} clustered, {num_queries:,} "
              f"queries, k = {k}; {machine_description()}; jax {jax.__version__}, "
              f"{jax.device_count()} device(s)",
              ["method", "setting", "queries/s", f"recall@{k}"], rows)


if __name__ == "__main__":
  app.run(main)

"""Maximum inner product search: our searchers against raw ScaNN, NumPy and faiss, same data.

    python benchmarks/search.py [--num_rows=500000 --num_queries=10000]
        [--scifact_index=runs/index/scifact_minilm_cos]

Two data sets:
  * synthetic clustered vectors: `--num_rows` x `--dim` float32, drawn around `--num_clusters`
    standard normal centres with standard deviation `--cluster_spread` within a cluster (1.0 is
    barely clustered); queries are fresh draws from the same mixture;
  * with `--scifact_index` (an index root written by `python -m orqa_realm.embed`): the real
    SciFact block embeddings, queried by the SciFact claims (test and train) embedded with the
    same model, whose configuration is read from the index manifest.

Every method answers the same queries; recall@k is against exact float32 NumPy search. ScaNN
runs are swept over leaves searched: raw ScaNN is built directly with the settings our
`ScannSearcher` derives, so the two differ only by our wrapper. faiss (IVF-flat, swept over
nprobe) runs when installed. Queries/s of the approximate methods are the best of `--repeats`
passes; the exact methods are timed over one pass (the build column of our exact searcher
includes compiling it).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

from absl import app, flags

from common import (REPO_ROOT, best_seconds, clustered_vectors, numpy_exact, print_table,
                    recall_at_k)

_NUM_ROWS = flags.DEFINE_integer("num_rows", 500_000, "Rows of the synthetic corpus.")
_DIM = flags.DEFINE_integer("dim", 128, "Dimension of the synthetic vectors.")
_NUM_CLUSTERS = flags.DEFINE_integer("num_clusters", 1000, "Gaussian centres of the synthetic data.")
_CLUSTER_SPREAD = flags.DEFINE_float(
    "cluster_spread", 0.5, "Standard deviation within a synthetic cluster (the centres' is 1).")
_NUM_QUERIES = flags.DEFINE_integer("num_queries", 10_000, "Synthetic queries.")
_K = flags.DEFINE_integer("k", 10, "Neighbours per query; recall@k is reported.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed passes over the queries (best is kept).")
_LEAVES_FRACTIONS = flags.DEFINE_list(
    "leaves_fractions", ["0.01", "0.02", "0.05", "0.1"],
    "ScaNN sweep: fractions of the tree's leaves searched per query.")
_LEAVES_MULTIPLIERS = flags.DEFINE_list(
    "leaves_multipliers", ["1", "3"], "ScaNN trees built: num_leaves = multiplier x sqrt(rows) "
    "(1 is our default).")
_NPROBE_FRACTIONS = flags.DEFINE_list(
    "nprobe_fractions", ["0.02", "0.05", "0.1"], "faiss sweep: fractions of the IVF lists probed.")
_SCIFACT_INDEX = flags.DEFINE_string(
    "scifact_index", "", "Index root of SciFact embeddings (python -m orqa_realm.embed); empty: "
    "skip the SciFact table.")
_SCIFACT_DIR = flags.DEFINE_string(
    "scifact_dir", os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "scifact"),
    "SciFact data directory (queries.test.tsv.gz, queries.train.tsv.gz).")


@dataclasses.dataclass
class Row:
  method: str
  setting: str
  build_seconds: float | None
  queries_per_second: float
  recall: float

  def cells(self) -> list[str]:
    build = "-" if self.build_seconds is None else f"{self.build_seconds:.1f}"
    return [self.method, self.setting, build, f"{self.queries_per_second:,.0f}",
            f"{self.recall:.4f}"]


def scifact_vectors(index_root: str, scifact_dir: str):
  """(block embeddings, query embeddings) of SciFact, the queries embedded with the retriever the
  index manifest records (its query tower on MiniLM's weights)."""
  import jax
  import numpy as np

  from orqa_realm.core.errors import InputError
  from orqa_realm.data.beir import read_queries
  from orqa_realm.data.pretrained import resolve_model_dir
  from orqa_realm.data.tokenization import Tokenizer
  from orqa_realm.encode.embedding import embed_queries, indexed_retriever
  from orqa_realm.index.storage import IndexRoot, load_embeddings
  from orqa_realm.modeling import partitioning, retriever
  from orqa_realm.modeling.hf_import import load_hf_bert

  version = IndexRoot(index_root).latest()
  if version is None:
    raise SystemExit(f"error: {index_root} has no published index version")
  if version.checkpoint_step is not None:
    raise SystemExit("error: --scifact_index must be embedded from Hugging Face weights (--bert)")
  try:
    config = indexed_retriever(version)
  except InputError as e:
    raise SystemExit(f"error: {e}") from e
  model_dir = resolve_model_dir("minilm")
  params = partitioning.unbox(retriever.init_params(config, jax.random.key(0),
                                                   load_hf_bert(model_dir).params))
  questions = []
  for split in ("test", "train"):
    path = os.path.join(scifact_dir, f"queries.{split}.tsv")
    questions += read_queries(path if os.path.exists(path) else path + ".gz").values()
  queries = embed_queries(questions, retriever.tower_params(params, config, "query"), config,
                          Tokenizer(model_dir))
  return np.asarray(load_embeddings(version)), queries


def timed(function):
  """(seconds, result) of one call."""
  started = time.perf_counter()
  result = function()
  return time.perf_counter() - started, result


def build_raw_scann(corpus, config):
  """ScaNN built directly with `config`'s (resolved) settings: the reference for our wrapper."""
  import scann

  builder = scann.scann_ops_pybind.builder(corpus, config.num_neighbors, "dot_product")
  if config.num_leaves:
    builder = builder.tree(num_leaves=config.num_leaves,
                           num_leaves_to_search=config.num_leaves_to_search,
                           training_sample_size=config.training_sample_size)
  return builder.score_ah(
      config.dimensions_per_block,
      anisotropic_quantization_threshold=config.anisotropic_quantization_threshold,
      training_sample_size=config.training_sample_size).reorder(
          config.reorder_num_neighbors).build()


def scann_rows(corpus, queries, exact_ids, k: int, repeats: int, multiplier: float) -> list[Row]:
  """Raw ScaNN and ours on one tree of multiplier x sqrt(rows) leaves, swept over leaves searched."""
  import numpy as np

  from orqa_realm.index.scann_index import ScannConfig, ScannSearcher

  num_queries = len(queries)
  requested = ScannConfig(num_neighbors=k)
  if multiplier != 1:
    requested = ScannConfig(num_neighbors=k, num_leaves=round(multiplier * math.sqrt(len(corpus))))
  started = time.perf_counter()
  scann_ours = ScannSearcher.build(corpus, requested)
  build_ours = time.perf_counter() - started
  config = scann_ours.config
  started = time.perf_counter()
  raw = build_raw_scann(corpus, config)
  build_raw = time.perf_counter() - started
  leaves_sweep = sorted({max(1, round(float(f) * config.num_leaves))
                         for f in _LEAVES_FRACTIONS.value} | {config.num_leaves_to_search}
                        ) if config.num_leaves else [0]
  rows = []
  for leaves in leaves_sweep:
    tree_args = dict(leaves_to_search=leaves) if leaves else {}
    setting = (f"{config.num_leaves} leaves, search {leaves}" if leaves else "no tree") + (
        f", AH {config.dimensions_per_block}, reorder {config.reorder_num_neighbors}")
    if leaves == config.num_leaves_to_search and multiplier == 1:
      setting += " (default)"

    def search_raw():
      return raw.search_batched_parallel(queries, final_num_neighbors=k,
                                         pre_reorder_num_neighbors=config.reorder_num_neighbors,
                                         **tree_args)

    seconds = best_seconds(search_raw, repeats)
    rows.append(Row("ScaNN raw (search_batched_parallel)", setting, build_raw,
                    num_queries / seconds, recall_at_k(np.asarray(search_raw()[0]), exact_ids)))
    searcher = scann_ours.with_leaves_to_search(leaves) if leaves else scann_ours
    seconds = best_seconds(lambda: searcher.search(queries, k), repeats)
    rows.append(Row("ScaNN, ours (ScannSearcher)", setting, build_ours, num_queries / seconds,
                    recall_at_k(searcher.search(queries, k).ids, exact_ids)))
  return rows


def run_methods(corpus, queries, k: int, repeats: int) -> list[Row]:
  import jax

  from orqa_realm.index.exact import ExactSearcher

  rows = []
  num_queries = len(queries)
  # Exact methods take minutes per pass at 500k rows: one timed pass each.
  seconds, exact_ids = timed(lambda: numpy_exact(corpus, queries, k))
  rows.append(Row("exact NumPy (reference)", "float32", None, num_queries / seconds, 1.0))

  started = time.perf_counter()
  ours = ExactSearcher(corpus)
  ours.search(queries[:ours.query_batch_size], k)  # compiles the full query batch shape
  build = time.perf_counter() - started
  seconds, found = timed(lambda: ours.search(queries, k))
  rows.append(Row("exact, ours (JAX, on device)", f"float32, {jax.device_count()} device(s)",
                  build, num_queries / seconds, recall_at_k(found.ids, exact_ids)))

  for multiplier in _LEAVES_MULTIPLIERS.value:
    rows.extend(scann_rows(corpus, queries, exact_ids, k, repeats, float(multiplier)))

  try:
    import faiss
  except ImportError:
    print("faiss not installed: its rows are left out (pip install faiss-cpu)")
    return rows
  faiss.omp_set_num_threads(os.cpu_count())
  started = time.perf_counter()
  flat = faiss.IndexFlatIP(corpus.shape[1])
  flat.add(corpus)
  build = time.perf_counter() - started
  seconds, (_, flat_ids) = timed(lambda: flat.search(queries, k))
  rows.append(Row("faiss IndexFlatIP", "exact", build, num_queries / seconds,
                  recall_at_k(flat_ids, exact_ids)))
  num_lists = max(1, round(math.sqrt(len(corpus))))
  started = time.perf_counter()
  ivf = faiss.IndexIVFFlat(flat, corpus.shape[1], num_lists, faiss.METRIC_INNER_PRODUCT)
  ivf.train(corpus)
  ivf.add(corpus)
  build = time.perf_counter() - started
  for nprobe in sorted({max(1, round(float(f) * num_lists)) for f in _NPROBE_FRACTIONS.value}):
    ivf.nprobe = nprobe
    seconds = best_seconds(lambda: ivf.search(queries, k), repeats)
    rows.append(Row("faiss IndexIVFFlat", f"{num_lists} lists, probe {nprobe}", build,
                    num_queries / seconds, recall_at_k(ivf.search(queries, k)[1], exact_ids)))
  return rows


def main(argv):
  del argv
  from importlib import metadata

  import jax
  import numpy as np

  versions = f"{os.cpu_count()} cores, jax {jax.__version__}, scann {metadata.version('scann')}"
  columns = ["method", "setting", "build s", "queries/s", f"recall@{_K.value}"]
  corpus, queries = clustered_vectors(_NUM_ROWS.value, _NUM_QUERIES.value, _DIM.value,
                                      _NUM_CLUSTERS.value, _CLUSTER_SPREAD.value)
  rows = run_methods(corpus, queries, _K.value, _REPEATS.value)
  print_table(f"Clustered synthetic, {len(corpus):,} x {corpus.shape[1]} ({_NUM_CLUSTERS.value} "
              f"centres, spread {_CLUSTER_SPREAD.value}), {len(queries):,} queries, {versions}",
              columns, [row.cells() for row in rows])
  if _SCIFACT_INDEX.value:
    corpus, queries = scifact_vectors(_SCIFACT_INDEX.value, _SCIFACT_DIR.value)
    rows = run_methods(corpus, queries.astype(np.float32), _K.value, _REPEATS.value)
    print()
    print_table(f"SciFact MiniLM, {len(corpus):,} x {corpus.shape[1]}, {len(queries):,} claims, "
                f"{versions}", columns, [row.cells() for row in rows])


if __name__ == "__main__":
  app.run(main)

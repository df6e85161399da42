"""SciFact (BEIR) benchmark: nDCG@10 and recall@100 on the 300 test claims of BM25, of dense
retrievers, and of each dense retriever fused with BM25, side by side in one table.

    python benchmarks/scifact.py --block_store=runs/blocks/scifact_docs \\
        --bm25_dir=runs/bm25/scifact_docs --embed_dtype=float32 \\
        --dense="MiniLM zero-shot=runs/index/scifact_minilm_cos" \\
        --dense="DPR=runs/index/scifact_dpr@runs/dpr_scifact"

Each --dense row is NAME=INDEX_DIR, or NAME=INDEX_DIR@WORKDIR for an index embedded from a
training run's checkpoint. The query encoder is the retriever the index was embedded with, its
settings (architecture and query length) read from the index: the checkpoint of the run the
index was built from, or --bert's weights for an index built from them (retriever flags that
contradict an index are refused, as by `evaluate`). The fusion (`index/fusion.py`) is chosen on
the training claims (their qrels): every normalisation and --alphas is tried there, the best
nDCG@10 wins, and only that one is evaluated on the test claims, so no test claim picks a
setting. For a retriever trained on the training claims, their nDCG@10 flatters its side of the
fusion; `--fixed_fusion=NORMALIZATION:ALPHA` (e.g. `zscore:1`) adds a row per retriever fused
with that setting, chosen on no claim. Every fusion here reads the top 100 of each list
(`evaluate --retrieval=hybrid` reads 1,000 by default, which moves z-scores and so the fused
ranking). Documents are ranked by their best block (one block per abstract in `scifact_docs`).
Each row's nDCG@10 is compared with BM25's claim by claim (`python -m
orqa_realm.significance`'s paired randomisation test).
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
from absl import flags

from common import print_table
from orqa_realm import cli
from orqa_realm.core import parallel
from orqa_realm.core.config import FlagBinder
from orqa_realm.core.errors import InputError
from orqa_realm.data import beir
from orqa_realm.data.blocks import StoreSource
from orqa_realm.encode import embedding, evaluation, runs, significance
from orqa_realm.index import bm25
from orqa_realm.index.fusion import NORMALIZATIONS, fuse_rankings
from orqa_realm.index.handle import open_index
from orqa_realm.index.searcher import SearchResult
from orqa_realm.index.storage import IndexVersion
from orqa_realm.modeling.retriever import RetrieverConfig

# The library's settings, under the flags `python -m orqa_realm.evaluate` gives them.
SETTINGS = FlagBinder("benchmarks/scifact.py")
SETTINGS.bind("store", StoreSource)
SETTINGS.bind("embedding", embedding.EmbedSettings)
SETTINGS.bind("retriever", RetrieverConfig)
SETTINGS.bind("bm25", bm25.BM25Config)

_DENSE = flags.DEFINE_multi_string(
    "dense", [], "A dense row, NAME=INDEX_DIR or NAME=INDEX_DIR@WORKDIR (repeat the flag).")
_SCIFACT = flags.DEFINE_string("scifact_dir", "../shared/data/scifact",
                               "Holds queries.{train,test} and qrels.{train,test}.")
_ALPHAS = flags.DEFINE_list("alphas", ["0.25", "0.5", "1", "1.5", "2", "3"],
                            "BM25 weights tried on the training claims.")
_FIXED_FUSION = flags.DEFINE_string(
    "fixed_fusion", None, "NORMALIZATION:ALPHA: also fuse each dense row with BM25 with this "
    "setting, chosen on no claim (for retrievers trained on the training claims).")
_DEPTH = 100


class Split(NamedTuple):
  query_ids: list[str]
  texts: list[str]
  qrels: dict[str, dict[str, int]]


def read_split(name: str) -> Split:
  directory = _SCIFACT.value
  queries_path = f"{directory}/queries.{name}.tsv"
  queries = beir.read_queries(queries_path if name == "train" else f"{queries_path}.gz")
  qrels = beir.read_qrels(f"{directory}/qrels.{name}.txt")
  query_ids = [qid for qid in queries if qid in qrels]
  return Split(query_ids, [queries[qid] for qid in query_ids], qrels)


def query_encoder(index_dir: str, workdir: str, bert: str, tokenizer, mesh
                  ) -> tuple[evaluation.QueryEncoder, IndexVersion]:
  """(the query encoder, the index version) of one dense row: the retriever the newest version
  of `index_dir` was embedded with, at the checkpoint of `workdir` it was embedded from, or
  --bert's weights."""
  version = embedding.latest_version(index_dir)
  if version.checkpoint_step is None:
    if workdir:
      raise InputError(f"{index_dir} was embedded from --bert's weights, not from a run: name it "
                       "as NAME=INDEX_DIR")
    run = runs.RunCheckpoint()
  else:
    if not workdir:
      raise InputError(f"{index_dir} was embedded from checkpoint {version.checkpoint_step} of a "
                       "run: name it as NAME=INDEX_DIR@WORKDIR")
    run = runs.RunCheckpoint(workdir=workdir, checkpoint_step=version.checkpoint_step)
  encoder = evaluation.query_encoder(run, bert, version, tokenizer,
                                     SETTINGS.given_settings("retriever"), mesh)
  return encoder, version


def scores(name: str, ranking: SearchResult, split: Split, store,
           baseline: np.ndarray | None) -> tuple[list[str], np.ndarray]:
  """(the table row, [queries] nDCG@10) of a ranking; with `baseline` ([queries] nDCG@10 of
  BM25), the row says whether the difference from it is more than chance."""
  run = evaluation.document_run(split.query_ids, ranking.ids, ranking.scores, store)
  per_query = evaluation.beir_per_query(run, split.qrels)
  metric = lambda name: np.array([per_query[qid][name] for qid in split.query_ids])
  ndcg = metric("ndcg_cut_10")
  row = [name, f"{ndcg.mean():.4f}", f"{metric('recall_10').mean():.3f}",
         f"{metric('recall_100').mean():.3f}"]
  if baseline is None:
    return row + ["-"], ndcg
  paired = significance.paired_comparison("ndcg_cut_10", baseline, ndcg)
  return row + [f"{paired.difference:+.4f} ({paired.better}/{paired.worse}, "
                f"p {paired.p_value:.3f})"], ndcg


def best_fusion(dense: SearchResult, sparse: SearchResult, split: Split, store
                ) -> tuple[str, float, float]:
  """(normalisation, alpha, nDCG@10) of the best fusion on `split`."""
  best = ("", 0.0, -1.0)
  for normalization in NORMALIZATIONS:
    for alpha in (float(a) for a in _ALPHAS.value):
      fused = fuse_rankings(dense, sparse, _DEPTH, alpha=alpha, normalization=normalization)
      run = evaluation.document_run(split.query_ids, fused.ids, fused.scores, store)
      ndcg = evaluation.beir_metrics(run, split.qrels)["ndcg_cut_10"]
      if ndcg > best[2]:
        best = (normalization, alpha, ndcg)
  return best


def fixed_fusion(spec: str) -> tuple[str, float]:
  """(normalisation, alpha) of --fixed_fusion's NORMALIZATION:ALPHA."""
  normalization, _, alpha = spec.partition(":")
  if normalization not in NORMALIZATIONS:
    raise InputError(f"unknown normalisation {normalization!r} (one of {NORMALIZATIONS})",
                     field="fixed_fusion")
  try:
    return normalization, float(alpha)
  except ValueError:
    raise InputError(f"the alpha of {spec!r} is not a number (NORMALIZATION:ALPHA, e.g. "
                     "zscore:1)", field="fixed_fusion") from None


def main():
  mesh = parallel.make_mesh()
  source = SETTINGS.build("store")
  store, tokenizer = source.open_store()
  embed_dtype = SETTINGS.build("embedding").dtype
  fixed = fixed_fusion(_FIXED_FUSION.value) if _FIXED_FUSION.value else None
  train, test = read_split("train"), read_split("test")
  depth = min(_DEPTH, len(store))
  started = time.perf_counter()
  sparse = bm25.open_or_build(store, SETTINGS.build("bm25"))
  sparse_rankings = {split: sparse.search_texts(data.texts, depth)
                     for split, data in (("train", train), ("test", test))}
  print(f"{len(test.texts)} test and {len(train.texts)} training claims, {len(store)} blocks; "
        f"BM25 {time.perf_counter() - started:.1f} s")
  bm25_row, bm25_ndcg = scores("BM25", sparse_rankings["test"], test, store, None)
  rows = [bm25_row]
  for spec in _DENSE.value:
    name, _, location = spec.partition("=")
    index_dir, _, workdir = location.partition("@")
    started = time.perf_counter()
    encoder, version = query_encoder(index_dir, workdir, source.bert, tokenizer, mesh)
    searcher = open_index(version, store, mesh=mesh).searcher
    dense_rankings = {}
    for split, data in (("train", train), ("test", test)):
      queries = embedding.embed_queries(data.texts, encoder.params, encoder.config, tokenizer,
                                        dtype=embed_dtype, mesh=mesh)
      dense_rankings[split] = searcher.search(queries, depth)
    def fused_row(normalization: str, alpha: float, chosen_by: str) -> list[str]:
      fused = fuse_rankings(dense_rankings["test"], sparse_rankings["test"], _DEPTH,
                            alpha=alpha, normalization=normalization)
      return scores(f"{name} + BM25 ({normalization}, alpha {alpha:g}; {chosen_by})", fused,
                    test, store, bm25_ndcg)[0]

    normalization, alpha, train_ndcg = best_fusion(dense_rankings["train"],
                                                   sparse_rankings["train"], train, store)
    rows.append(scores(name, dense_rankings["test"], test, store, bm25_ndcg)[0])
    rows.append(fused_row(normalization, alpha, f"train nDCG {train_ndcg:.3f}"))
    if fixed:
      rows.append(fused_row(*fixed, "fixed"))
    print(f"{name}: {time.perf_counter() - started:.0f} s")
  print_table("SciFact test (300 claims)", ["retriever", "nDCG@10", "recall@10", "recall@100",
                                            "nDCG@10 - BM25's (claims better/worse, paired p)"],
              rows)


if __name__ == "__main__":
  cli.run(main, SETTINGS)

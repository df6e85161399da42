"""A multi-vector run's index side by side: storage, quality and search speed.

    python benchmarks/multi_vector.py --workdir=runs/colbert_squad \
        --block_store=runs/blocks/squad_demo --eval_qa_dataset=squad:runs/qa/squad_demo/test.json
    python benchmarks/multi_vector.py --workdir=runs/colbert_scifact \
        --block_store=runs/blocks/scifact_docs \
        --eval_beir_queries=../shared/data/scifact/queries.test.tsv.gz \
        --eval_beir_qrels=../shared/data/scifact/qrels.test.txt

The run's newest checkpoint encodes the store and the queries once; then, in one process:
  1. storage: float32, float16 and ColBERTv2's residual compression at each `--nbits` (k-means
     centroids as `embed` trains them): bytes per vector and per block, and the quality of exact
     search over each (answer recall@k or nDCG@10), with the recall of float32's top 10;
  2. search speed: exact MaxSim on the devices (ours) and a plain NumPy MaxSim (the reference:
     same vectors, block by block in batches), against PLAID over the 2-bit index swept over
     ncells / centroid score threshold / ndocs, each with its recall of exact search's top 10
     over the same decompressed vectors; the fastest PLAID setting at >= 0.99 recall is named.
If PyLate (`pip install pylate`) imports, its MaxSim over the same float32 vectors is a row of the
speed table too; otherwise the NumPy row is the reference.
"""

from __future__ import annotations

import functools
import itertools
import time

import numpy as np
from absl import app, flags

from common import machine_description, print_table
from retrieval_queries import load_queries

from orqa_realm.core import config as settings_lib
from orqa_realm.core import parallel
from orqa_realm.core.errors import InputError
from orqa_realm.data import beir
from orqa_realm.data.blocks import StoreSource
from orqa_realm.data.qa import QAEvaluation
from orqa_realm.encode import runs
from orqa_realm.encode import multi_vector as encode
from orqa_realm.index import residual_codec
from orqa_realm.index.multi_vector_search import ExactMultiVectorSearcher, TokenVectors
from orqa_realm.index.plaid import PLAIDSearcher, PLAIDSettings
from orqa_realm.index.searcher import SearchResult
from orqa_realm.modeling import multi_vector
from orqa_realm.modeling.late_interaction import VectorSet

_WORKDIR = flags.DEFINE_string("workdir", "", "A ColBERT (or ME-BERT) run.")
_NBITS = flags.DEFINE_list("nbits", ["4", "2", "1"], "Residual bits compared.")
_CENTROIDS = flags.DEFINE_integer("centroids", 0, "k-means centroids; 0: ColBERTv2's rule.")
_NCELLS = flags.DEFINE_list("ncells", ["1", "2", "4", "8"], "PLAID sweep: centroids probed.")
_THRESHOLDS = flags.DEFINE_list("thresholds", ["0.5", "0.45", "0.4"],
                                "PLAID sweep: centroid score thresholds.")
_NDOCS = flags.DEFINE_list("ndocs", ["256", "1024", "4096"], "PLAID sweep: candidates kept.")
_TIMED_QUERIES = flags.DEFINE_integer("timed_queries", 300,
                                      "Queries timed for queries/s (the first n).")

SETTINGS = settings_lib.FlagBinder("benchmarks/multi_vector.py")
SETTINGS.bind("store", StoreSource)
SETTINGS.bind("questions", QAEvaluation, QAEvaluation(recall_ks=(1, 5, 20)))
SETTINGS.bind("beir", beir.BEIREvaluation)

K = 10


def overlap_at_k(found: np.ndarray, reference: np.ndarray, k: int = K) -> float:
  """Mean fraction of each query's reference top k found in its top k."""
  return float(np.mean([len(set(f[:k]) & set(r[:k])) / k for f, r in zip(found, reference)]))


def numpy_maxsim(corpus: VectorSet, queries: VectorSet, k: int, batch: int = 256
                 ) -> SearchResult:
  """The reference: MaxSim of each query against every block with NumPy, blocks in batches."""
  ids, scores = [], []
  for vectors, mask in zip(queries.vectors, queries.mask):
    query = vectors[mask != 0]  # [n, dim]
    row = np.empty(len(corpus.vectors), np.float32)
    for start in range(0, len(row), batch):
      similarity = corpus.vectors[start:start + batch] @ query.T  # [b, tokens, n]
      similarity[corpus.mask[start:start + batch] == 0] = -np.inf
      best = similarity.max(axis=1)
      row[start:start + batch] = np.where(np.isfinite(best), best, 0.0).sum(axis=1)
    order = np.argsort(-row, kind="stable")[:k]
    ids.append(order)
    scores.append(row[order])
  return SearchResult(np.array(ids), np.array(scores))


def pylate_maxsim(corpus: VectorSet, queries: VectorSet, k: int) -> SearchResult | None:
  """PyLate's MaxSim (`colbert_scores`) over the same vectors, or None when it does not
  import."""
  try:
    import torch
    from pylate.scores import colbert_scores
  except ImportError:
    return None
  documents = torch.from_numpy(corpus.vectors)
  document_mask = torch.from_numpy(corpus.mask)
  ids, scores = [], []
  for vectors, mask in zip(queries.vectors, queries.mask):
    query = torch.from_numpy(vectors[mask != 0])[None]
    row = colbert_scores(query, documents, document_mask)[0].numpy()
    order = np.argsort(-row, kind="stable")[:k]
    ids.append(order)
    scores.append(row[order])
  return SearchResult(np.array(ids), np.array(scores))


def queries_per_second(search, queries: VectorSet, k: int) -> tuple[float, SearchResult]:
  """(queries/s, result) of `search(queries, k)`, after one untimed call on a few queries."""
  search(VectorSet(queries.vectors[:4], queries.mask[:4]), k)
  started = time.perf_counter()
  result = search(queries, k)
  return len(queries.vectors) / (time.perf_counter() - started), result


def main(argv):
  del argv
  mesh = parallel.make_mesh()
  source = SETTINGS.build("store")
  store, tokenizer = source.open_store()
  run = runs.restore_multi_vector_run(_WORKDIR.value, None, mesh)
  runs.check_tokenizer(run, tokenizer.fingerprint, store.directory)
  config = run.config
  if isinstance(config, multi_vector.PolyEncoderConfig):
    raise InputError("PLAID and the reference rows rank by MaxSim: a poly-encoder run is "
                     "measured by evaluate --retrieval=poly_encoder", field="workdir")
  for nbits in _NBITS.value:
    if int(nbits) not in residual_codec.NBITS:
      raise InputError(f"--nbits: {nbits} is not one of {residual_codec.NBITS}", field="nbits")
  queries_data = load_queries(store, SETTINGS.build("questions"), SETTINGS.build("beir"))
  started = time.perf_counter()
  corpus = encode.encode_blocks(store, tokenizer, run.params, config, mesh=mesh)
  encode_seconds = time.perf_counter() - started
  queries = encode.encode_queries(queries_data.texts, tokenizer, run.params, config, mesh=mesh)
  num_vectors, dim = corpus.vectors.shape
  print(f"{machine_description()}\n{config.kind} run {run.workdir} (checkpoint {run.step}): "
        f"{len(store)} blocks, {num_vectors} vectors of {dim} ({num_vectors / len(store):.1f} a "
        f"block), encoded in {encode_seconds:.0f} s; {len(queries_data.texts)} queries")
  score = functools.partial(multi_vector.scores, config)
  depth = min(queries_data.depth, len(store))

  # 1. Storage and quality.
  exact32 = ExactMultiVectorSearcher(corpus, score, mesh=mesh).search_sets(queries, depth)
  vectors_per_block = num_vectors / len(store)
  exact32_quality = queries_data.quality(exact32)
  storage_rows = [["float32", str(4 * dim), f"{4 * dim * vectors_per_block:.0f}",
                   *(f"{v:.4f}" for v in exact32_quality.values()), "1.000"]]
  metric_names = list(exact32_quality)
  float16 = TokenVectors(corpus.vectors.astype(np.float16).astype(np.float32), corpus.lengths)
  result = ExactMultiVectorSearcher(float16, score, mesh=mesh).search_sets(queries, depth)
  storage_rows.append(["float16", str(2 * dim), f"{2 * dim * vectors_per_block:.0f}",
                       *(f"{v:.4f}" for v in queries_data.quality(result).values()),
                       f"{overlap_at_k(result.ids, exact32.ids):.3f}"])
  num_centroids = _CENTROIDS.value or residual_codec.default_num_centroids(num_vectors)
  rng = np.random.default_rng(0)
  sample = corpus.vectors[np.sort(rng.choice(num_vectors, min(num_vectors, 64 * num_centroids),
                                             replace=False))]
  compressed_indexes = {}
  for nbits in (int(n) for n in _NBITS.value):
    started = time.perf_counter()
    codec = residual_codec.train_codec(sample, num_centroids=num_centroids, nbits=nbits,
                                       normalized=config.normalize)
    compressed = residual_codec.compress(codec, corpus.vectors)
    build_seconds = time.perf_counter() - started
    restored = TokenVectors(residual_codec.decompress(codec, compressed), corpus.lengths)
    compressed_indexes[nbits] = (codec, compressed, restored)
    result = ExactMultiVectorSearcher(restored, score, mesh=mesh).search_sets(queries, depth)
    per_vector = compressed.bytes_per_vector
    storage_rows.append([f"{nbits}-bit residual ({num_centroids} centroids, {build_seconds:.0f} s)",
                         str(per_vector), f"{per_vector * vectors_per_block:.0f}",
                         *(f"{v:.4f}" for v in queries_data.quality(result).values()),
                         f"{overlap_at_k(result.ids, exact32.ids):.3f}"])
  print_table("\nStorage and quality (exact search over each)",
              ["storage", "bytes/vector", "bytes/block", *metric_names,
               "recall of float32 top 10"], storage_rows)

  # 2. Search speed at matched recall, on the 2-bit index (or the first compressed one).
  nbits = 2 if 2 in compressed_indexes else next(iter(compressed_indexes))
  codec, compressed, restored = compressed_indexes[nbits]
  timed = VectorSet(queries.vectors[:_TIMED_QUERIES.value], queries.mask[:_TIMED_QUERIES.value])
  exact_searcher = ExactMultiVectorSearcher(restored, score, mesh=mesh)
  exact_qps, exact = queries_per_second(exact_searcher.search_sets, timed, K)
  padded = restored.padded()
  numpy_qps, numpy_result = queries_per_second(
      lambda q, k: numpy_maxsim(padded, q, k), timed, K)
  speed_rows = [[f"exact MaxSim, ours ({mesh.size} device(s))", "", f"{exact_qps:.1f}", "1.000",
                 "1.0x"],
                ["NumPy MaxSim (reference)", "", f"{numpy_qps:.1f}",
                 f"{overlap_at_k(numpy_result.ids, exact.ids):.3f}",
                 f"{numpy_qps / exact_qps:.2f}x"]]
  pylate_timing = pylate_maxsim(padded, VectorSet(timed.vectors[:4], timed.mask[:4]), K)
  if pylate_timing is not None:
    started = time.perf_counter()
    pylate_result = pylate_maxsim(padded, timed, K)
    pylate_qps = len(timed.vectors) / (time.perf_counter() - started)
    speed_rows.append(["PyLate colbert_scores (reference)", "", f"{pylate_qps:.1f}",
                       f"{overlap_at_k(pylate_result.ids, exact.ids):.3f}",
                       f"{pylate_qps / exact_qps:.2f}x"])
  best = None
  for ncells, threshold, ndocs in itertools.product(
      (int(v) for v in _NCELLS.value), (float(v) for v in _THRESHOLDS.value),
      (int(v) for v in _NDOCS.value)):
    settings = PLAIDSettings(ncells=ncells, centroid_score_threshold=threshold, ndocs=ndocs)
    plaid = PLAIDSearcher(codec, compressed, corpus.lengths, settings)
    qps, result = queries_per_second(plaid.search_sets, timed, K)
    recall = overlap_at_k(result.ids, exact.ids)
    speed_rows.append([f"PLAID {nbits}-bit", f"{ncells} / {threshold} / {ndocs}", f"{qps:.1f}",
                       f"{recall:.3f}", f"{qps / exact_qps:.2f}x"])
    if recall >= 0.99 and (best is None or qps > best[0]):
      best = (qps, speed_rows[-1][1])
  print_table(f"\nSearch speed, {len(timed.vectors)} queries, top {K} (recall: of exact MaxSim's "
              f"top {K} over the same {nbits}-bit vectors)",
              ["method", "ncells / threshold / ndocs", "queries/s", f"recall@{K}",
               "vs exact"], speed_rows)
  if best is None:
    print(f"\nNo PLAID setting reached 0.99 recall of exact MaxSim's top {K}.")
  else:
    print(f"\nFastest PLAID at >= 0.99 recall: {best[1]}, {best[0]:.1f} queries/s, "
          f"{best[0] / exact_qps:.1f}x exact MaxSim.")
  if pylate_timing is None:
    print("PyLate is not installed here: the NumPy row is the reference.")


if __name__ == "__main__":
  SETTINGS.define()
  app.run(main)

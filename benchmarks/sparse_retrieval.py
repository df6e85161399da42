"""Learned sparse retrieval (SPLADE, DeepCT) against BM25 (bm25s) on the same block store and
queries: index size and query latency, in one run.

    python benchmarks/sparse_retrieval.py --block_store=runs/blocks/squad_demo \
        --queries=squad:runs/qa/squad_demo/test.json [--splade=bert_tiny_splade | --workdir=RUN] \
        [--deepct_workdir=runs/deepct_squad]

For each method: postings (nonzero (block, term) entries), the index's bytes on disk, the time to
build it, and queries/s over the same questions, searching only (queries already tokenized, or
already encoded into term weights for SPLADE) and end to end (SPLADE's query encoder included).
The search of both is exact over every posting of the query's terms: bm25s scores its own CSR
matrix, ours a scipy.sparse product. DeepCT's index is bm25s over the rewritten blocks: its
postings are bm25s's too, and its queries are plain term lists (end to end adds only their
analysis); its build time includes the term weighter's pass over the store.
"""

from __future__ import annotations

import os
import tempfile
import time

from absl import app, flags

from common import best_seconds, machine_description, print_table

_BLOCK_STORE = flags.DEFINE_string("block_store", "runs/blocks/squad_demo", "The block store.")
_QUERIES = flags.DEFINE_string("queries", "squad:runs/qa/squad_demo/test.json",
                               "Questions as FORMAT:PATH.")
_NUM_QUERIES = flags.DEFINE_integer("num_queries", 1000, "Questions searched (the first n).")
_SPLADE = flags.DEFINE_string("splade", "bert_tiny_splade",
                              "A BertForMaskedLM directory (or packaged name) read as SPLADE.")
_WORKDIR = flags.DEFINE_string("workdir", "", "A --task=splade run instead of --splade.")
_DEEPCT_WORKDIR = flags.DEFINE_string("deepct_workdir", "",
                                      "A --task=deepct run: adds its row when given.")
_TOKENIZER = flags.DEFINE_string("tokenizer", "minilm", "The block store's tokenizer.")
_K = flags.DEFINE_integer("k", 20, "Blocks per query.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed passes (the best is kept).")


def directory_bytes(directory: str) -> int:
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(directory) for name in names)


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from orqa_realm.core import parallel  # pylint: disable=g-import-not-at-top
  from orqa_realm.data.blocks import open_store
  from orqa_realm.data.qa import load_qa_dataset
  from orqa_realm.encode import deepct as deepct_encode
  from orqa_realm.encode import sparse as sparse_encode
  from orqa_realm.index import bm25
  from orqa_realm.modeling.splade import SpladeConfig

  mesh = parallel.make_mesh()
  model = (sparse_encode.run_model(_WORKDIR.value, None, mesh) if _WORKDIR.value
           else sparse_encode.pretrained_model(_SPLADE.value, SpladeConfig()))
  store, tokenizer = open_store(_BLOCK_STORE.value, _TOKENIZER.value)
  questions = [example.question for example in load_qa_dataset(_QUERIES.value)]
  questions = questions[:_NUM_QUERIES.value]
  rows = []
  with tempfile.TemporaryDirectory() as scratch:
    started = time.perf_counter()
    bm25_searcher = bm25.BM25Searcher.build(store)
    bm25_build = time.perf_counter() - started
    bm25_searcher.save(os.path.join(scratch, "bm25"), store)
    tokens = bm25_searcher.tokenize(questions)
    search_tokens = lambda: bm25_searcher.retriever.retrieve(tokens, k=_K.value,
                                                             show_progress=False)
    end_to_end = lambda: bm25_searcher.search_texts(questions, _K.value)
    postings = int(bm25_searcher.retriever.scores["data"].shape[0])
    rows.append(["BM25 (bm25s)", postings, directory_bytes(os.path.join(scratch, "bm25")),
                 bm25_build, len(questions) / best_seconds(search_tokens, _REPEATS.value),
                 len(questions) / best_seconds(end_to_end, _REPEATS.value)])

    settings = sparse_encode.SparseSearch(index_dir=os.path.join(scratch, "splade"))
    started = time.perf_counter()
    index = sparse_encode.open_or_build(store, tokenizer, model, settings, mesh)
    splade_build = time.perf_counter() - started
    encoded = sparse_encode.encode_queries(questions, tokenizer, model, mesh=mesh)
    search_encoded = lambda: index.search(encoded, _K.value)
    splade_end_to_end = lambda: index.search(
        sparse_encode.encode_queries(questions, tokenizer, model, mesh=mesh), _K.value)
    name = _WORKDIR.value or _SPLADE.value
    rows.append([f"SPLADE ({name})",
                 index.num_postings, directory_bytes(settings.index_dir), splade_build,
                 len(questions) / best_seconds(search_encoded, _REPEATS.value),
                 len(questions) / best_seconds(splade_end_to_end, _REPEATS.value)])

    if _DEEPCT_WORKDIR.value:
      deepct_model = deepct_encode.run_model(_DEEPCT_WORKDIR.value, None, mesh)
      deepct_settings = deepct_encode.DeepCTSearch(index_dir=os.path.join(scratch, "deepct"))
      started = time.perf_counter()
      splitter = deepct_encode.word_splitter(tokenizer, deepct_model.analyzer)
      rewritten = deepct_encode.open_or_build(store, splitter, deepct_model, deepct_settings,
                                              mesh)
      deepct_build = time.perf_counter() - started
      terms = deepct_encode.query_terms(questions, tokenizer, splitter)
      deepct_end_to_end = lambda: rewritten.search(
          deepct_encode.query_terms(questions, tokenizer, splitter), _K.value)
      rows.append([f"DeepCT ({_DEEPCT_WORKDIR.value})",
                   int(rewritten.retriever.scores["data"].shape[0]),
                   directory_bytes(deepct_settings.index_dir), deepct_build,
                   len(questions) / best_seconds(lambda: rewritten.search(terms, _K.value),
                                                 _REPEATS.value),
                   len(questions) / best_seconds(deepct_end_to_end, _REPEATS.value)])
  print_table(
      f"Sparse retrieval, {len(store)} blocks, {len(questions)} questions, k={_K.value}; "
      f"{machine_description()}; jax {jax.__version__}, numpy {np.__version__}",
      ["method", "postings", "index bytes", "build s", "search q/s", "end-to-end q/s"],
      [[name, f"{postings:,}", f"{size:,}", f"{build:.1f}", f"{search:.0f}", f"{full:.1f}"]
       for name, postings, size, build, search, full in rows])


if __name__ == "__main__":
  app.run(main)

"""Hybrid retrieval sweep: answer recall@k of a dense retriever, of BM25 and of their fusion for
each BM25 weight alpha and score normalisation, on one QA set.

Choose alpha on training questions, then evaluate the test questions once with it:

    python benchmarks/fusion.py --block_store=runs/blocks/squad_demo \\
        --index_dir=runs/index/squad_minilm --bert=minilm --embed_dtype=float32 \\
        --eval_qa_dataset=squad:runs/qa/squad_demo/train.json

The dense retriever is evaluate's (the retriever the newest version of --index_dir was embedded
with: --workdir's checkpoint, or --bert's weights; retriever flags that contradict the index are
refused); BM25 uses the --bm25_* flags. Each ranking is computed once, to depth --hybrid_depth,
and every fusion reuses them.
"""

from __future__ import annotations

import functools
import time

import numpy as np
from absl import flags

from common import print_table, refuse_flags
from orqa_realm import cli
from orqa_realm.core import parallel
from orqa_realm.core.config import FlagBinder
from orqa_realm.core.errors import InputError
from orqa_realm.data.answer_spans import BlockAnswerMatcher
from orqa_realm.data.answers import gold_hits, recall_at_k
from orqa_realm.data.blocks import StoreSource
from orqa_realm.data.qa import QAEvaluation
from orqa_realm.encode import evaluation
from orqa_realm.index import bm25
from orqa_realm.index.fusion import NORMALIZATIONS, fuse_rankings

# The library's settings, under evaluate's flags (its dense, BM25 and hybrid retrieval).
SETTINGS = FlagBinder("benchmarks/fusion.py")
SETTINGS.bind("store", StoreSource)
SETTINGS.bind("questions", QAEvaluation)
evaluation.bind_retrieval_settings(SETTINGS)

_ALPHAS = flags.DEFINE_list("alphas", ["0.1", "0.2", "0.3", "0.5", "0.7", "1", "1.5", "2", "3"],
                            "BM25 weights to try.")
_KS = (1, 5, 20)


def recall_row(name: str, ids: np.ndarray, store, matcher: BlockAnswerMatcher,
               examples) -> list[str]:
  """Answer and gold-paragraph recall@1/5/20 of [questions, >= 20] rankings, in % (the gold
  column is empty for sets that name no gold paragraph)."""
  hits = np.stack([matcher.has_answer(blocks, example.answers, example.kind)
                   for blocks, example in zip(ids[:, :max(_KS)], examples)])
  answers = recall_at_k(hits, _KS)
  gold = (f"{100 * recall_at_k(gold_hits(ids[:, :1], store, examples), [1])[1]:.1f}"
          if all(example.gold_document_id for example in examples) else "")
  return [name, *(f"{100 * answers[k]:.1f}" for k in _KS), gold]


def main():
  refuse_flags(SETTINGS, ["eval_recall_ks"], f"its cut-offs are {', '.join(map(str, _KS))}")
  refuse_flags(SETTINGS, ["hybrid_alpha", "hybrid_normalization"],
               "every normalisation is fused with each of --alphas")
  qa = SETTINGS.build("questions")
  if not qa.qa_dataset:
    raise InputError("--eval_qa_dataset is required", field="eval_qa_dataset")
  mesh = parallel.make_mesh()
  source = SETTINGS.build("store")
  store, tokenizer = source.open_store()
  examples = qa.examples()
  questions = [example.question for example in examples]
  depth = min(SETTINGS.build("hybrid").depth, len(store))

  started = time.perf_counter()
  encoder_of = functools.partial(
      evaluation.query_encoder, SETTINGS.build("dense retrieval"), source.bert,
      tokenizer=tokenizer, given=SETTINGS.given_settings("retriever"), mesh=mesh)
  dense, _ = evaluation.dense_searcher(store, tokenizer, SETTINGS.build("index"),
                                       SETTINGS.build("embedding"), encoder_of, mesh)
  dense_ranking = dense.search_texts(questions, depth)
  dense_seconds = time.perf_counter() - started
  started = time.perf_counter()
  sparse = bm25.open_or_build(store, SETTINGS.build("bm25"))
  sparse_ranking = sparse.search_texts(questions, depth)
  bm25_seconds = time.perf_counter() - started
  print(f"{len(questions)} questions, {len(store)} blocks, k' = {depth}; dense "
        f"{dense_seconds:.0f} s (embedding included), BM25 {bm25_seconds:.1f} s (indexing "
        "included)")

  matcher = BlockAnswerMatcher(store)  # normalises each block's text once for all rows
  rows = [recall_row("dense", dense_ranking.ids, store, matcher, examples),
          recall_row("BM25", sparse_ranking.ids, store, matcher, examples)]
  for normalization in NORMALIZATIONS:
    for alpha in (float(a) for a in _ALPHAS.value):
      fused = fuse_rankings(dense_ranking, sparse_ranking, max(_KS), alpha=alpha,
                            normalization=normalization)
      rows.append(recall_row(f"hybrid {normalization} alpha={alpha:g}", fused.ids, store,
                             matcher, examples))
  print_table(f"Answer recall (%) on {qa.qa_dataset}",
              ["retriever", "R@1", "R@5", "R@20", "gold R@1"], rows)


if __name__ == "__main__":
  cli.run(main, SETTINGS)

"""The evaluation queries of a retrieval benchmark and how a ranking of them is scored: answer
recall@k for a QA data set, nDCG@10 and recall@100 for BEIR queries."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from orqa_realm.data import beir
from orqa_realm.data.answers import answer_hits, recall_at_k
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.qa import QAEvaluation
from orqa_realm.encode import evaluation
from orqa_realm.index.searcher import SearchResult


class Queries(NamedTuple):
  texts: list[str]
  quality: Callable[[SearchResult], dict[str, float]]  # a ranking of `texts` -> named metrics
  depth: int  # blocks a ranking needs for `quality`


def load_queries(store: BlockStore, qa: QAEvaluation, beir_set: beir.BEIREvaluation) -> Queries:
  """`qa`'s questions when it names a data set, else `beir_set`'s judged queries."""
  if qa.qa_dataset:
    examples = qa.examples()

    def answer_quality(result: SearchResult) -> dict[str, float]:
      hits = answer_hits(result.ids, store, examples)
      return {f"R@{k}": v for k, v in recall_at_k(hits, qa.sorted_ks).items()}

    return Queries([e.question for e in examples], answer_quality, max(qa.sorted_ks))
  queries, qrels = beir.read_queries(beir_set.queries), beir.read_qrels(beir_set.qrels)
  ids = [qid for qid in queries if qid in qrels]

  def judged_quality(result: SearchResult) -> dict[str, float]:
    metrics = evaluation.beir_metrics(
        evaluation.document_run(ids, result.ids, result.scores, store), qrels)
    return {"nDCG@10": metrics["ndcg_cut_10"], "R@100": metrics["recall_100"]}

  return Queries([queries[qid] for qid in ids], judged_quality, 100)

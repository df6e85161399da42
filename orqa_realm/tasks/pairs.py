"""Supervised training examples (a query, its positive block, hard negatives) from a QA set or
BEIR queries + qrels, ranked by a first-stage retriever: BM25, a published dense index, or both
fused. DPR mines BM25 negatives; the cross-encoder (and the distillation tasks after it) choose.

The positive and negative rules are `data/dpr.py`'s, whatever ranked the candidates: a negative
never contains an answer, is never of the gold paragraph and never of a judged document (no
false negatives from the labels).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import numpy as np

from orqa_realm.core import parallel
from orqa_realm.core.config import nested, setting
from orqa_realm.core.errors import InputError
from orqa_realm.data import beir
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.dpr import DPRExamples, beir_examples, qa_examples
from orqa_realm.data.qa import load_qa_dataset
from orqa_realm.data.tokenization import Tokenizer
from orqa_realm.encode import embedding, evaluation, runs
from orqa_realm.index import bm25
from orqa_realm.index.fusion import FusionConfig, HybridSearcher
from orqa_realm.index.searcher import TextSearcher

MiningRetrieval = Literal["bm25", "dense", "hybrid"]


@dataclasses.dataclass(frozen=True)
class TrainingPairs:
  """Where the training queries and their relevant blocks come from, and what ranks the
  candidates their hard negatives are taken from."""
  qa_dataset: str = setting(
      "", "Training questions as FORMAT:PATH (nq_open, webquestions, curatedtrec, triviaqa, "
      "squad, or tfds:NAME@SPLIT).", flag="train_qa_dataset")
  beir_queries: str = setting(
      "", "BEIR training queries (id<TAB>text), with --train_beir_qrels, instead of "
      "--train_qa_dataset.", flag="train_beir_queries")
  beir_qrels: str = setting(
      "", "Relevance judgements of --train_beir_queries (positives; judged documents are never "
      "negatives).", flag="train_beir_qrels")
  negative_depth: int = setting(
      100, "Blocks per query ranked by --negatives_retrieval, from which its positive and hard "
      "negatives are taken.", flag="hard_negative_depth")
  retrieval: MiningRetrieval = setting(
      "bm25", "What ranks the hard-negative candidates: BM25 over the store (--bm25_*), a "
      "published dense index (--negatives_index_dir, --negatives_workdir), or both fused "
      "(--hybrid_*).", flag="negatives_retrieval")
  index_dir: str = setting(
      "", "The dense index that ranks candidates (--negatives_retrieval=dense or hybrid).",
      flag="negatives_index_dir")
  workdir: str = setting(
      "", "The run --negatives_index_dir was embedded from (its query tower encodes the "
      "queries); empty: the pretrained --bert it was embedded from.", flag="negatives_workdir")
  bm25: bm25.BM25Config = nested(bm25.BM25Config())
  fusion: FusionConfig = nested(FusionConfig())

  def check(self, reads_bm25: bool = False) -> None:
    """Refuses a missing training set, or settings the chosen retrieval does not read
    (`reads_bm25`: the task reads the BM25 settings for something else too)."""
    if bool(self.qa_dataset) == bool(self.beir_queries):
      raise InputError("train on exactly one of --train_qa_dataset and --train_beir_queries "
                       "(with --train_beir_qrels)")
    if self.beir_queries and not self.beir_qrels:
      raise InputError("--train_beir_queries needs --train_beir_qrels", field="train_beir_qrels")
    dense = self.retrieval in ("dense", "hybrid")
    if dense and not self.index_dir:
      raise InputError(f"--negatives_retrieval={self.retrieval} needs --negatives_index_dir",
                       field="negatives_index_dir")
    if not dense and (self.index_dir or self.workdir):
      raise InputError("--negatives_index_dir and --negatives_workdir are read by "
                       "--negatives_retrieval=dense or hybrid only", field="negatives_index_dir")
    if self.retrieval == "dense" and self.bm25 != bm25.BM25Config() and not reads_bm25:
      raise InputError("--bm25_* settings are read by --negatives_retrieval=bm25 or hybrid only",
                       field="negatives_retrieval")
    if self.retrieval != "hybrid" and self.fusion != FusionConfig():
      raise InputError("--hybrid_* settings are read by --negatives_retrieval=hybrid only",
                       field="negatives_retrieval")


def mining_searcher(pairs: TrainingPairs, store: BlockStore, tokenizer: Tokenizer,
                    bert: str) -> TextSearcher:
  """The first-stage retriever that ranks hard-negative candidates (`pairs.retrieval`); a dense
  index is searched by the query tower it was embedded with (`bert`: the pretrained weights of
  an index embedded without a run)."""
  if pairs.retrieval == "bm25":
    return bm25.open_or_build(store, pairs.bm25)
  mesh = parallel.make_mesh()
  encoder_of = functools.partial(evaluation.query_encoder, runs.RunCheckpoint(pairs.workdir),
                                 bert, tokenizer=tokenizer, given={}, mesh=mesh)
  dense, _ = evaluation.dense_searcher(
      store, tokenizer, embedding.IndexSearch(index_dir=pairs.index_dir),
      embedding.EmbedSettings(embed_dtype="float32"), encoder_of, mesh)
  if pairs.retrieval == "dense":
    return dense
  return HybridSearcher(dense, bm25.open_or_build(store, pairs.bm25), alpha=pairs.fusion.alpha,
                        depth=pairs.fusion.depth, normalization=pairs.fusion.normalization)


def build_examples(pairs: TrainingPairs, store: BlockStore, searcher: TextSearcher,
                   num_hard_negatives: int, seed: int) -> DPRExamples:
  """The training examples: positives, and `num_hard_negatives` hard negatives from `searcher`'s
  top `pairs.negative_depth` blocks of each query (topped up at random when too few)."""
  depth = min(pairs.negative_depth, len(store))
  if pairs.qa_dataset:
    examples = load_qa_dataset(pairs.qa_dataset)
    rankings = searcher.search_texts([example.question for example in examples], depth).ids
    built = qa_examples(examples, store, rankings, num_hard_negatives, seed=seed)
  else:
    queries, qrels = beir.read_queries(pairs.beir_queries), beir.read_qrels(pairs.beir_qrels)
    query_ids = sorted(queries)
    ids = searcher.search_texts([queries[qid] for qid in query_ids], depth).ids
    built = beir_examples(queries, qrels, store, dict(zip(query_ids, ids)), num_hard_negatives,
                          seed=seed)
  if not built.examples:
    raise InputError("no training query has a positive block in the store",
                     path=pairs.qa_dataset or pairs.beir_qrels)
  return built


def negatives_matrix(examples, rows: np.ndarray) -> np.ndarray:
  """[rows, 1 + negatives] int32 block ids of examples `rows`: the positive, then the hard
  negatives, BM25's (or the mining retriever's) best first."""
  return np.array([(examples[row].positive, *examples[row].hard_negatives) for row in rows],
                  np.int32)

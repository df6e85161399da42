"""Retrieval evaluation of a retriever (a run's checkpoint, or HF weights) over a published index.

Answer recall@k on a QA set (an answer string occurs in one of the top k blocks; regexes for
CuratedTREC) and, where the set names gold paragraphs (SQuAD), gold-paragraph recall@k:

    python -m orqa_realm.evaluate --block_store=runs/blocks/squad_demo --workdir=runs/ict_demo \\
        --index_dir=runs/index/squad_demo --qa_dataset=squad:demo_data/squad/dev-v1.1.public36.json.gz \\
        --output_dir=runs/eval/ict_demo

nDCG@10 and recall@100 from BEIR qrels, documents ranked by their best block (computed by
pytrec_eval, the evaluator BEIR itself uses):

    python -m orqa_realm.evaluate --block_store=runs/blocks/scifact --index_dir=runs/index/scifact \\
        --bert=minilm --pooling=mean --projection_size=0 --block_format=joined \\
        --beir_queries=../shared/data/scifact/queries.test.tsv.gz \\
        --beir_qrels=../shared/data/scifact/qrels.test.txt --output_dir=runs/eval/scifact

With --reader_workdir (an ORQA run), its reader also answers each question from the top k
retrieved blocks: exact match, and `predictions.jsonl` (answer, correctness, top blocks). The
question encoder is --workdir's (an ICT or ORQA run) or --bert's; an ORQA run's own:

    python -m orqa_realm.evaluate --block_store=runs/blocks/squad_demo \
        --index_dir=runs/index/squad_minilm --workdir=runs/orqa_squad_demo \
        --reader_workdir=runs/orqa_squad_demo --qa_dataset=squad:runs/qa/squad_demo/test.json \
        --output_dir=runs/eval/orqa_squad_demo

The retriever is dense by default; `--retrieval=bm25` ranks blocks by BM25 instead (no index or
question encoder needed; --bert names the tokenizer of the store and of a reader), and
`--retrieval=hybrid` fuses both rankings (`--hybrid_alpha`, `--hybrid_depth`):

    python -m orqa_realm.evaluate --retrieval=bm25 --block_store=runs/blocks/squad_demo \
        --bert=minilm --bm25_dir=runs/bm25/squad_demo --reader_workdir=runs/orqa_squad_demo \
        --qa_dataset=squad:runs/qa/squad_demo/test.json --output_dir=runs/eval/bm25_squad_demo

Writes `metrics.json` and `recall_at_k.png` to --output_dir.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import app, flags

from orqa_realm.core import checkpoints, parallel
from orqa_realm import embed
from orqa_realm.data import beir
from orqa_realm.data.answer_spans import BlockAnswerMatcher, continuation_mask
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.qa import every_nth, load_qa_dataset
from orqa_realm.data.tokenization import Tokenizer
from orqa_realm.core.errors import InputError
from orqa_realm.index import bm25, index_flags
from orqa_realm.index.fusion import NORMALIZATIONS, HybridSearcher
from orqa_realm.index.handle import open_index
from orqa_realm.index.searcher import DenseTextSearcher, TextSearcher
from orqa_realm.index.storage import IndexRoot
from orqa_realm.data.answers import answer_hits, gold_hits, recall_at_k
from orqa_realm.modeling.pretrained import resolve_model_dir
from orqa_realm.encode.predict import BlockReader, exact_match_rate, write_predictions
from orqa_realm.tasks import orqa, retriever_flags

_QA_DATASET = flags.DEFINE_string(
    "qa_dataset", None, "QA set as FORMAT:PATH (nq_open, webquestions, curatedtrec, triviaqa, "
    "squad) for answer recall@k.")
_BEIR_QUERIES = flags.DEFINE_string("beir_queries", None, "BEIR queries TSV (id<TAB>text).")
_BEIR_QRELS = flags.DEFINE_string("beir_qrels", None, "TREC/BEIR qrels for --beir_queries.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where metrics.json and the plot go.")
_MAX_QUESTIONS = flags.DEFINE_integer(
    "max_questions", 0, "Most --qa_dataset questions evaluated, every n-th from the first (the "
    "subset an ORQA run's --eval_questions evaluates); 0: all.")
_RECALL_KS = flags.DEFINE_list("recall_ks", ["1", "5", "20", "100"], "Cut-offs for recall@k.")
_READER_WORKDIR = flags.DEFINE_string(
    "reader_workdir", None, "An ORQA run whose reader answers the --qa_dataset questions from "
    "the top k retrieved blocks (exact match, predictions.jsonl).")
_BEIR_BLOCK_DEPTH = flags.DEFINE_integer(
    "beir_block_depth", 1000, "Blocks retrieved per BEIR query before ranking their documents.")
_RETRIEVAL = flags.DEFINE_enum(
    "retrieval", "dense", ["dense", "bm25", "hybrid"],
    "dense: the question encoder over --index_dir; bm25: BM25 over --block_store (--bm25_*); "
    "hybrid: both, fused by normalised dense + --hybrid_alpha x BM25 score.")
_HYBRID_ALPHA = flags.DEFINE_float("hybrid_alpha", 1.0, "Weight of BM25 in hybrid fusion.")
_HYBRID_DEPTH = flags.DEFINE_integer(
    "hybrid_depth", 1000, "k': blocks taken from each ranking before fusing (at least the k "
    "asked for); a block missing from one ranking gets that ranking's k'-th score.")
_HYBRID_NORMALIZATION = flags.DEFINE_enum(
    "hybrid_normalization", "minmax", list(NORMALIZATIONS),
    "How each ranking's scores are normalised before fusing.")


def document_run(query_ids: Sequence[str], block_ids: np.ndarray, block_scores: np.ndarray,
                 store: BlockStore) -> dict[str, dict[str, float]]:
  """{query id: {document id: score}}, each document scored by its best retrieved block."""
  run = {}
  for query_id, blocks, scores in zip(query_ids, block_ids, block_scores):
    documents: dict[str, float] = {}
    for block, score in zip(blocks, scores):
      document = store.document_id(block)
      documents[document] = max(documents.get(document, -np.inf), float(score))
    run[query_id] = documents
  return run


def beir_metrics(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]
                 ) -> dict[str, float]:
  """Mean nDCG@10, recall@100 (and recall@k curve points) over the judged queries."""
  import pytrec_eval

  judged = {qid: run.get(qid, {}) for qid in qrels}
  measures = {"ndcg_cut.10", "recall.1", "recall.5", "recall.10", "recall.20", "recall.100"}
  per_query = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(judged)
  names = ["ndcg_cut_10", "recall_1", "recall_5", "recall_10", "recall_20", "recall_100"]
  return {name: float(np.mean([scores[name] for scores in per_query.values()]))
          for name in names}


def plot_recall(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str, title: str) -> None:
  """Recall@k curves ({name: (ks, recalls)}) to a PNG."""
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot

  figure, axes = pyplot.subplots(figsize=(6, 4))
  for name, (ks, recalls) in curves.items():
    axes.plot(ks, recalls, label=name, marker="." if len(ks) < 20 else None)
  axes.set(xscale="log", xlabel="k", ylabel="recall@k", ylim=(0, 1), title=title)
  axes.grid(True, alpha=0.3)
  axes.legend()
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  pyplot.close(figure)


def recall_curve(hits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(ks, recall@k) for every k = 1..depth of [questions, depth] hits."""
  return np.arange(1, hits.shape[1] + 1), np.logical_or.accumulate(hits, axis=1).mean(axis=0)


def question_encoder(mesh):
  """(retriever config, query tower params, checkpoint step, the ORQA run or None): --workdir's
  (an ICT or ORQA run; --checkpoint_step, default the latest) or --bert's weights."""
  workdir = checkpoints.WORKDIR.value
  if workdir and checkpoints.read_model_config(workdir).get("task") == orqa.ORQATask.name:
    step = checkpoints.CHECKPOINT_STEP.value
    run = orqa.restore_run(workdir, None if step < 0 else step, mesh)
    return run.retriever_config, run.params["retriever"], run.step, run
  config, params, step = embed.retriever_from_flags(mesh, block_tower_only=False)
  return config, params, step, None


def dense_searcher(store: BlockStore, tokenizer: Tokenizer, mesh
                   ) -> tuple[DenseTextSearcher, dict[str, Any]]:
  """The question encoder (--workdir or --bert) over the newest version of --index_dir, and what
  they were built from (for metrics.json)."""
  if not index_flags.INDEX_DIR.value:
    raise InputError("dense retrieval needs the index to search", field="index_dir")
  version = IndexRoot(index_flags.INDEX_DIR.value).latest()
  if version is None:
    raise InputError("no index version yet: run python -m orqa_realm.embed first",
                     path=index_flags.INDEX_DIR.value)
  searcher = open_index(version, store, backend=index_flags.INDEX_BACKEND.value,
                        mesh=mesh).searcher
  config, params, step, run = question_encoder(mesh)
  if run is not None:
    orqa.check_index_of_run(run, version)
  elif version.checkpoint_step != step:
    print(f"warning: the index was built from checkpoint {version.checkpoint_step}, the "
          f"queries are embedded with checkpoint {step}", file=sys.stderr)
  # An ORQA run's question encoder reads questions as it was trained to.
  query_length = run.settings.query_length if run else retriever_flags.QUERY_LENGTH.value

  def embed_texts(texts: Sequence[str]) -> np.ndarray:
    return embed.embed_queries(list(texts), params, config, tokenizer, query_length=query_length,
                               dtype=index_flags.embed_dtype(), mesh=mesh)

  return DenseTextSearcher(embed_texts, searcher), dict(
      index_version=version.version, index_checkpoint_step=version.checkpoint_step,
      query_checkpoint_step=step)


def text_searcher(store: BlockStore, tokenizer: Tokenizer, mesh
                  ) -> tuple[TextSearcher, dict[str, Any]]:
  """The --retrieval searcher of the store's blocks, and what it was built from."""
  retrieval = _RETRIEVAL.value
  info: dict[str, Any] = dict(retrieval=retrieval)
  if retrieval in ("bm25", "hybrid"):
    sparse = bm25.open_or_build(store, index_flags.bm25_settings(), index_flags.BM25_DIR.value)
    info["bm25"] = dataclasses.asdict(sparse.settings)
  if retrieval == "bm25":
    return sparse, info
  dense, dense_info = dense_searcher(store, tokenizer, mesh)
  info.update(dense_info)
  if retrieval == "dense":
    return dense, info
  info["fusion"] = dict(alpha=_HYBRID_ALPHA.value, depth=_HYBRID_DEPTH.value,
                        normalization=_HYBRID_NORMALIZATION.value)
  return HybridSearcher(dense, sparse, alpha=_HYBRID_ALPHA.value, depth=_HYBRID_DEPTH.value,
                        normalization=_HYBRID_NORMALIZATION.value), info


def read_answers(reader_run: orqa.ORQARun, store, tokenizer, result, examples, texts, mesh, *,
                 add_retrieval_scores: bool) -> tuple[dict, list]:
  """The reader's answers from each question's top k blocks: (metrics, predictions).

  The reader was trained to add its retriever's scaled scores to the span logits; scores of
  another kind (BM25, fused) are not on that scale, so without `add_retrieval_scores` the spans
  are ranked by the reader alone.
  """
  reader = BlockReader(store, tokenizer, reader_run.reader_config, reader_run.settings,
                       continuation=continuation_mask(tokenizer), mesh=mesh)
  k = min(reader_run.settings.reader_beam_size, result.ids.shape[1])
  retrieval_scores = result.scores[:, :k] if add_retrieval_scores else np.zeros_like(
      result.scores[:, :k])
  predictions = reader.read(reader_run.params["reader"], texts, result.ids[:, :k],
                            retrieval_scores)
  return dict(exact_match=exact_match_rate(examples, predictions), reader_step=reader_run.step,
              reader_beam_size=k, reader_adds_retrieval_scores=add_retrieval_scores), predictions


def main(argv):
  del argv
  if not (retriever_flags.BLOCK_STORE.value and _OUTPUT_DIR.value):
    sys.exit("error: --block_store and --output_dir are required")
  if bool(_QA_DATASET.value) == bool(_BEIR_QUERIES.value):
    sys.exit("error: pass exactly one of --qa_dataset and --beir_queries (with --beir_qrels)")
  if _READER_WORKDIR.value and not _QA_DATASET.value:
    sys.exit("error: --reader_workdir answers the questions of a --qa_dataset")
  ks = sorted(int(k) for k in _RECALL_KS.value)
  mesh = parallel.make_mesh()
  try:
    store = BlockStore(retriever_flags.BLOCK_STORE.value)
    tokenizer = Tokenizer(resolve_model_dir(retriever_flags.BERT.value))
    store.check_tokenizer(tokenizer)
    searcher, searcher_info = text_searcher(store, tokenizer, mesh)
    reader_run = (orqa.restore_run(_READER_WORKDIR.value, None, mesh) if _READER_WORKDIR.value
                  else None)
    if _QA_DATASET.value:
      examples = load_qa_dataset(_QA_DATASET.value)
      if _MAX_QUESTIONS.value:
        examples = every_nth(examples, _MAX_QUESTIONS.value)
      texts, source = [example.question for example in examples], _QA_DATASET.value
    else:
      if not _BEIR_QRELS.value:
        raise InputError("--beir_queries needs --beir_qrels", field="beir_qrels")
      queries, qrels = beir.read_queries(_BEIR_QUERIES.value), beir.read_qrels(_BEIR_QRELS.value)
      query_ids = [qid for qid in queries if qid in qrels]
      texts, source = [queries[qid] for qid in query_ids], _BEIR_QUERIES.value
  except InputError as e:
    sys.exit(f"error: {e}")
  depth = min(len(store), max(ks) if _QA_DATASET.value else _BEIR_BLOCK_DEPTH.value)
  if reader_run is not None:
    depth = min(len(store), max(depth, reader_run.settings.reader_beam_size))
  result = searcher.search_texts(texts, depth)
  metrics = dict(source=source, num_queries=len(texts), num_blocks=len(store), **searcher_info)
  curves = {}
  os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
  if _QA_DATASET.value:
    hits = answer_hits(result.ids, store, examples)
    metrics["answer_recall"] = {
        f"@{k}": v for k, v in recall_at_k(hits, [k for k in ks if k <= depth]).items()}
    curves["answer"] = recall_curve(hits)
    if all(example.gold_document_id for example in examples):
      gold = gold_hits(result.ids, store, examples)
      metrics["gold_paragraph_recall"] = {
          f"@{k}": v for k, v in recall_at_k(gold, [k for k in ks if k <= depth]).items()}
      curves["gold paragraph"] = recall_curve(gold)
    if reader_run is not None:
      reader_metrics, predictions = read_answers(
          reader_run, store, tokenizer, result, examples, texts, mesh,
          add_retrieval_scores=_RETRIEVAL.value == "dense")
      metrics.update(reader_metrics)
      write_predictions(os.path.join(_OUTPUT_DIR.value, "predictions.jsonl"), examples,
                        predictions, result, store, BlockAnswerMatcher(store),
                        num_blocks=reader_metrics["reader_beam_size"])
  else:
    metrics.update(beir_metrics(document_run(query_ids, result.ids, result.scores, store), qrels))
    beir_ks = np.array([1, 5, 10, 20, 100])
    curves["documents"] = (beir_ks, np.array([metrics[f"recall_{k}"] for k in beir_ks]))
  with open(os.path.join(_OUTPUT_DIR.value, "metrics.json"), "w", encoding="utf-8") as f:
    json.dump(metrics, f, indent=2)
  plot_recall(curves, os.path.join(_OUTPUT_DIR.value, "recall_at_k.png"), os.path.basename(source))
  print(json.dumps(metrics))


if __name__ == "__main__":
  app.run(main)

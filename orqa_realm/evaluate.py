"""Retrieval evaluation of a retriever (a run's checkpoint, or pretrained weights) over a
published index, and of an ORQA reader.

Answer recall@k on a QA set (an answer string occurs in one of the top k blocks; regexes for
CuratedTREC) and, where the set names gold paragraphs (SQuAD), gold-paragraph recall@k:

    python -m orqa_realm.evaluate --block_store=runs/blocks/squad_demo --workdir=runs/ict_demo \\
        --index_dir=runs/index/squad_demo \\
        --eval_qa_dataset=squad:demo_data/squad/dev-v1.1.public36.json.gz \\
        --output_dir=runs/eval/ict_demo

The query encoder is the one the index was embedded with, its settings read from the run
(--workdir) or, for pretrained weights, from the index: they need not be repeated, and a flag
that contradicts them is refused. nDCG@10 and recall@100 from BEIR qrels, documents ranked by
their best block (pytrec_eval, the evaluator BEIR itself uses):

    python -m orqa_realm.evaluate --block_store=runs/blocks/scifact \\
        --index_dir=runs/index/scifact \\
        --eval_beir_queries=../shared/data/scifact/queries.test.tsv.gz \\
        --eval_beir_qrels=../shared/data/scifact/qrels.test.txt --output_dir=runs/eval/scifact

With --reader_workdir (an ORQA run), its reader also answers each question from the top k
retrieved blocks: exact match, and `predictions.jsonl` (answer, correctness, top blocks). An
ORQA run's own question encoder searches with `--workdir` set to the same run.

The retriever is dense by default; `--retrieval=bm25` ranks blocks by BM25 instead (no index or
question encoder needed; --bert names the tokenizer of the store and of a reader),
`--retrieval=splade` by a SPLADE model's sparse vectors, `--retrieval=deepct` by BM25 over the
store rewritten with a DeepCT run's term weights (`--workdir`, `--deepct_index_dir`), and
`--retrieval=hybrid` fuses the dense ranking with a sparse one (`--hybrid_sparse=bm25`, or
`splade` / `deepct` with `--hybrid_sparse_model`; `--hybrid_alpha`, `--hybrid_depth`).
`--retrieval=colbert` (or `me_bert`, `poly_encoder`) searches a multi-vector index with the
query encoder of the run it was embedded from, exactly or with PLAID
(`--multi_vector_backend=plaid` over a compressed index):

    python -m orqa_realm.evaluate --retrieval=colbert --block_store=runs/blocks/squad_demo \
        --workdir=runs/colbert_squad --index_dir=runs/index/colbert_squad \
        --eval_qa_dataset=squad:runs/qa/squad_demo/test.json --output_dir=runs/eval/colbert

With --rerank_workdir (a cross-encoder run, `--task=cross_encoder`), the first stage's top
--rerank_depth blocks of each query are reordered by the cross-encoder's scores before any
metric is taken (and before a reader reads them); the first stage's own metrics are kept under
`first_stage`, and the rerank cost (pairs, seconds, pairs/s) under `rerank`.

Writes `metrics.json`, `recall_at_k.png` and `per_query.jsonl` (each query's or question's
own metrics, which `python -m orqa_realm.significance` compares between evaluations) to
--output_dir.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any, Literal

import numpy as np
from etils import epath

from orqa_realm import cli
from orqa_realm.core import config as settings_lib
from orqa_realm.core import parallel, paths, run_directory
from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.data import beir, tfds_input
from orqa_realm.data.answer_spans import BlockAnswerMatcher
from orqa_realm.data.answers import answer_hits, exact_match, gold_hits, recall_at_k
from orqa_realm.data.blocks import StoreSource
from orqa_realm.data.qa import QAEvaluation
from orqa_realm.encode import deepct as deepct_encode
from orqa_realm.encode import evaluation, runs, significance
from orqa_realm.encode import multi_vector as multi_vector_encode
from orqa_realm.encode import sparse as sparse_encode
from orqa_realm.encode.predict import write_predictions
from orqa_realm.encode.rerank import CrossEncoderReranker, RerankSettings
from orqa_realm.index import bm25
from orqa_realm.index.fusion import HybridSearcher
from orqa_realm.index.rerank import rerank
from orqa_realm.index.plaid import PLAIDSettings
from orqa_realm.index.searcher import SearchResult
from orqa_realm.modeling import multi_vector, splade


# The --retrieval values that rank blocks by sparse term matching, alone or in a hybrid.
SPARSE_KINDS = ("bm25", "splade", "deepct")
SparseKind = Literal[SPARSE_KINDS]


@dataclasses.dataclass(frozen=True)
class HybridSparse:
  """The sparse side of a hybrid. Its model is named apart from --workdir, which names the dense
  side's run."""
  kind: SparseKind = setting(
      "bm25", "What --retrieval=hybrid fuses with the dense ranking: bm25 (--bm25_*), splade "
      "(--sparse_index_dir, --splade_*) or deepct (--deepct_*), with --hybrid_sparse_model.",
      flag="hybrid_sparse")
  model: str = setting(
      "", "The hybrid's SPLADE or DeepCT model: a run (--task=splade or deepct; its newest "
      "checkpoint), or for splade a BERT with its masked-LM head (a directory or a name, e.g. "
      "bert_tiny_splade) read with SPLADE's default lengths.", flag="hybrid_sparse_model")

  def __post_init__(self):
    if self.kind == "bm25" and self.model:
      raise InputError("BM25 has no model: --hybrid_sparse_model is read with "
                       "--hybrid_sparse=splade or deepct", field="hybrid_sparse_model")
    if self.kind != "bm25" and not self.model:
      raise InputError(f"--hybrid_sparse={self.kind} needs the model of its side",
                       field="hybrid_sparse_model")


@dataclasses.dataclass(frozen=True)
class EvaluateCommand:
  """What is evaluated, and where the results go."""
  output_dir: str = setting("", "Where metrics.json, the plot and predictions.jsonl go.")
  retrieval: Literal[("dense", *SPARSE_KINDS, "hybrid", *multi_vector.CONFIGS)] = setting(
      "dense", "dense: the question encoder over --index_dir; bm25: BM25 over --block_store "
      "(--bm25_*); splade: learned sparse term weights of a SPLADE run (--workdir) or of "
      "--bert's MLM head over their inverted index (--sparse_index_dir); deepct: BM25 over the "
      "store rewritten by a DeepCT run's term weights (--workdir, --deepct_*); hybrid: dense "
      "and --hybrid_sparse fused by normalised dense + --hybrid_alpha x sparse score; colbert, "
      "me_bert, poly_encoder: that multi-vector run (--workdir) over its index (--index_dir, "
      "--multi_vector_backend).")
  reader_workdir: str = setting(
      "", "An ORQA run whose reader answers the --eval_qa_dataset questions from the top k "
      "retrieved blocks (exact match, predictions.jsonl).")


SETTINGS = settings_lib.FlagBinder("evaluate")
SETTINGS.bind("evaluate", EvaluateCommand)
SETTINGS.bind("store", StoreSource)
SETTINGS.bind("questions", QAEvaluation, QAEvaluation(recall_ks=(1, 5, 20, 100)))
SETTINGS.bind("beir", beir.BEIREvaluation)
evaluation.bind_retrieval_settings(SETTINGS)
SETTINGS.bind("tfds", tfds_input.TFDSSettings)
SETTINGS.bind("rerank", RerankSettings)
SETTINGS.bind("multi-vector search", multi_vector_encode.MultiVectorSearch)

SETTINGS.bind("plaid", PLAIDSettings)
SETTINGS.bind("splade", sparse_encode.SparseSearch)
SETTINGS.bind("splade model", splade.SpladeConfig)
SETTINGS.bind("deepct", deepct_encode.DeepCTSearch)
SETTINGS.bind("hybrid sparse", HybridSparse)

MULTI_VECTOR_KINDS = tuple(multi_vector.CONFIGS)  # the --retrieval values of run kinds

DENSE_GROUPS = tuple(group for group, _ in evaluation.DENSE_SETTINGS)


def read_groups(command: EvaluateCommand, qa: QAEvaluation) -> list[str]:
  """The groups of settings this evaluation reads."""
  groups = ["evaluate", "store", "tfds", "questions" if qa.qa_dataset else "beir"]
  if command.retrieval in ("dense", "hybrid"):
    groups += DENSE_GROUPS
  if command.retrieval == "hybrid":
    groups += ["hybrid", "hybrid sparse"]
  sparse_kind = sparse_kind_of(command)
  if sparse_kind == "bm25":
    groups.append("bm25")
  if sparse_kind == "splade":
    groups.append("splade")
    # A run's settings are its own; a hybrid's pretrained SPLADE takes the defaults, since
    # the dense side reads the same length flags.
    if command.retrieval == "splade" and not SETTINGS.build("splade").run.workdir:
      groups.append("splade model")
  if sparse_kind == "deepct":
    groups.append("deepct")
  if command.retrieval in MULTI_VECTOR_KINDS:
    groups.append("multi-vector search")
    if SETTINGS.build("multi-vector search").backend == "plaid":
      groups.append("plaid")
  if SETTINGS.given("rerank_workdir"):
    groups.append("rerank")
  return groups


def sparse_kind_of(command: EvaluateCommand) -> str | None:
  """The sparse retrieval the command reads: --retrieval's own, or a hybrid's sparse side."""
  if command.retrieval in SPARSE_KINDS:
    return command.retrieval
  return SETTINGS.build("hybrid sparse").kind if command.retrieval == "hybrid" else None


def sparse_model_source(command: EvaluateCommand, kind: str, source: StoreSource
                        ) -> tuple[runs.RunCheckpoint, str]:
  """(the run, or else the pretrained BERT) the `kind` side reads: --workdir and --bert alone,
  --hybrid_sparse_model in a hybrid."""
  if command.retrieval != "hybrid":
    return SETTINGS.build(kind).run, source.bert
  model = SETTINGS.build("hybrid sparse").model
  if (epath.Path(model) / run_directory.RUN_FILE).exists():
    return runs.RunCheckpoint(model), ""
  return runs.RunCheckpoint(), model


def sparse_searcher(command: EvaluateCommand, kind: str, source: StoreSource, store, tokenizer,
                    mesh):
  """The `kind` (SPARSE_KINDS) searcher of the store's blocks, and what it was built from."""
  if kind == "bm25":
    searcher = bm25.open_or_build(store, SETTINGS.build("bm25"))
    return searcher, dict(bm25=dataclasses.asdict(searcher.settings))
  run, bert = sparse_model_source(command, kind, source)
  if kind == "splade":
    splade_config = (SETTINGS.build("splade model") if command.retrieval == "splade"
                     else splade.SpladeConfig())
    model = (sparse_encode.run_model(run.workdir, run.step, mesh) if run.workdir
             else sparse_encode.pretrained_model(bert, splade_config))
    return sparse_encode.text_searcher(store, tokenizer, model, SETTINGS.build("splade"), mesh)
  if not run.workdir:
    raise InputError("DeepCT rewrites the store with a DeepCT run's weights: pass the run "
                     "(--task=deepct) as " + ("--hybrid_sparse_model" if command.retrieval ==
                                              "hybrid" else "--workdir"), field="workdir")
  model = deepct_encode.run_model(run.workdir, run.step, mesh)
  return deepct_encode.text_searcher(store, tokenizer, model, SETTINGS.build("deepct"), mesh)


def text_searcher(command: EvaluateCommand, source: StoreSource, store, tokenizer, mesh):
  """The --retrieval searcher of the store's blocks, and what it was built from."""
  info: dict[str, Any] = dict(retrieval=command.retrieval)
  if command.retrieval in SPARSE_KINDS:
    searcher, sparse_info = sparse_searcher(command, command.retrieval, source, store,
                                            tokenizer, mesh)
    return searcher, dict(info, **sparse_info)
  if command.retrieval in MULTI_VECTOR_KINDS:
    searcher, multi_vector_info = multi_vector_encode.text_searcher(
        store, tokenizer, SETTINGS.build("multi-vector search"), command.retrieval, mesh,
        SETTINGS.build("plaid"))
    return searcher, dict(info, **multi_vector_info)
  encoder_of = functools.partial(
      evaluation.query_encoder, SETTINGS.build("dense retrieval"), source.bert,
      tokenizer=tokenizer, given=SETTINGS.given_settings("retriever"), mesh=mesh)
  dense, dense_info = evaluation.dense_searcher(
      store, tokenizer, SETTINGS.build("index"), SETTINGS.build("embedding"), encoder_of, mesh)
  info.update(dense_info)
  if command.retrieval == "dense":
    return dense, info
  kind = sparse_kind_of(command)
  sparse, sparse_info = sparse_searcher(command, kind, source, store, tokenizer, mesh)
  fusion = SETTINGS.build("hybrid")
  info.update(sparse_info, hybrid_sparse=kind, fusion=dataclasses.asdict(fusion))
  return HybridSearcher(dense, sparse, alpha=fusion.alpha, depth=fusion.depth,
                        normalization=fusion.normalization), info


def check_flags() -> EvaluateCommand:
  """The command's settings, once every given flag is known to be read by this evaluation."""
  command, qa = SETTINGS.build("evaluate"), SETTINGS.build("questions")
  if bool(qa.qa_dataset) == bool(SETTINGS.build("beir").queries):
    raise InputError("pass exactly one of --eval_qa_dataset and --eval_beir_queries (with "
                     "--eval_beir_qrels)")
  SETTINGS.check_read(read_groups(command, qa), f"evaluate --retrieval={command.retrieval}")
  if SETTINGS.given("checkpoint_step") and not SETTINGS.build("dense retrieval").workdir:
    raise InputError("--checkpoint_step names a checkpoint of --workdir, which is not given",
                     field="checkpoint_step")
  return command


def qa_retrieval_metrics(result: SearchResult, store, examples, ks
                         ) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
  """Answer recall@k (and gold-paragraph recall@k where every question names its paragraph) of
  a ranking, their curves for the plot, and each question's hit or miss ({"answer_recall@k":
  [questions] bool, ...}) for per_query.jsonl."""
  depth = result.ids.shape[1]
  ks = [k for k in ks if k <= depth]
  hits = answer_hits(result.ids, store, examples)  # [questions, depth]
  metrics = {"answer_recall": {f"@{k}": v for k, v in recall_at_k(hits, ks).items()}}
  per_question = {f"answer_recall@{k}": hits[:, :k].any(axis=1) for k in ks}
  curves = {"answer": evaluation.recall_curve(hits)}
  if all(example.gold_document_id for example in examples):
    gold = gold_hits(result.ids, store, examples)  # [questions, depth]
    metrics["gold_paragraph_recall"] = {f"@{k}": v for k, v in recall_at_k(gold, ks).items()}
    per_question.update({f"gold_paragraph_recall@{k}": gold[:, :k].any(axis=1) for k in ks})
    curves["gold paragraph"] = evaluation.recall_curve(gold)
  return metrics, curves, per_question


def question_ids(examples) -> list[str]:
  """Each question's id in per_query.jsonl: the dataset's own ids where every question has a
  distinct one (SQuAD's), otherwise its position in the file."""
  ids = [example.qid for example in examples]
  if all(ids) and len(set(ids)) == len(ids):
    return ids
  return [str(i) for i in range(len(examples))]


def main() -> None:
  command = check_flags()
  qa, beir_set = SETTINGS.build("questions"), SETTINGS.build("beir")
  if not command.output_dir:
    raise InputError("--output_dir is required", field="output_dir")
  if command.reader_workdir and not qa.qa_dataset:
    raise InputError("--reader_workdir answers the questions of an --eval_qa_dataset",
                     field="reader_workdir")
  paths.check_writable(command.output_dir)  # before the evaluation, not after it
  tfds_input.use_settings(SETTINGS.build("tfds"))
  # The questions first: a bad file is reported before any model is loaded.
  if qa.qa_dataset:
    examples = qa.examples()
    texts, where = [example.question for example in examples], qa.qa_dataset
    ks = qa.sorted_ks
  else:
    if not beir_set.qrels:
      raise InputError("--eval_beir_queries needs --eval_beir_qrels", field="eval_beir_qrels")
    queries, qrels = beir.read_queries(beir_set.queries), beir.read_qrels(beir_set.qrels)
    query_ids = [qid for qid in queries if qid in qrels]
    if not query_ids:
      raise InputError(f"no query of {beir_set.queries} is judged in {beir_set.qrels}",
                       path=beir_set.qrels)
    texts, where = [queries[qid] for qid in query_ids], beir_set.queries
  mesh = parallel.make_mesh()
  source = SETTINGS.build("store")
  store, tokenizer = source.open_store()
  searcher, searcher_info = text_searcher(command, source, store, tokenizer, mesh)
  reader_run = (runs.restore_orqa_run(command.reader_workdir, None, mesh)
                if command.reader_workdir else None)
  rerank_settings = SETTINGS.build("rerank")
  reranker = (CrossEncoderReranker(
      runs.restore_cross_encoder_run(rerank_settings.workdir, rerank_settings.step, mesh), store,
      tokenizer, rerank_settings, mesh, show_progress=True)
              if rerank_settings.workdir else None)
  depth = min(len(store), max(ks) if qa.qa_dataset else beir_set.block_depth)
  if reader_run is not None:
    depth = min(len(store), max(depth, reader_run.settings.reader_beam_size))
  if reranker is not None:
    depth = min(len(store), max(depth, rerank_settings.depth))
  started = time.time()
  result = searcher.search_texts(texts, depth)
  seconds = time.time() - started
  # The whole first stage, as a user waits for it: query encoding and its compilation included
  # (benchmarks/ time the search alone).
  metrics = dict(source=where, num_queries=len(texts), num_blocks=len(store), **searcher_info,
                 first_stage_seconds=round(seconds, 2),
                 first_stage_queries_per_second=round(len(texts) / seconds, 1))
  if reranker is not None:
    if qa.qa_dataset:
      metrics["first_stage"], _, _ = qa_retrieval_metrics(result, store, examples, ks)
    else:
      metrics["first_stage"] = evaluation.beir_metrics(
          evaluation.document_run(query_ids, result.ids, result.scores, store), qrels)
    result = rerank(result, reranker(texts, result.ids[:, :rerank_settings.depth]),
                    rerank_settings.first_stage_weight)
    metrics["rerank"] = dict(workdir=reranker.run.workdir, checkpoint_step=reranker.run.step,
                             depth=min(rerank_settings.depth, depth),
                             first_stage_weight=rerank_settings.first_stage_weight,
                             **reranker.cost())
  output_dir = paths.resolve(command.output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  if qa.qa_dataset:
    recalls, curves, per_query = qa_retrieval_metrics(result, store, examples, ks)
    metrics.update(recalls)
    if reader_run is not None:
      # The reader adds its retriever's scaled scores only to the dense scores it was trained
      # with, not to BM25's, fused or cross-encoder scores.
      reader_metrics, predictions = evaluation.read_answers(
          reader_run, store, tokenizer, result, examples, mesh,
          add_retrieval_scores=command.retrieval == "dense" and reranker is None)
      metrics.update(reader_metrics)
      per_query["exact_match"] = np.array([
          exact_match(prediction.answer, example.answers, example.kind)
          for prediction, example in zip(predictions, examples)])
      write_predictions(str(output_dir / "predictions.jsonl"), examples, predictions, result,
                        store, BlockAnswerMatcher(store),
                        num_blocks=reader_metrics["reader_beam_size"])
    significance.write_per_query(output_dir, question_ids(examples), per_query)
  else:
    by_query = evaluation.beir_per_query(
        evaluation.document_run(query_ids, result.ids, result.scores, store), qrels)
    judged = list(by_query)
    per_query = {name: np.array([by_query[qid][name] for qid in judged])
                 for name in evaluation.BEIR_MEASURES.values()}
    metrics.update({name: float(values.mean()) for name, values in per_query.items()})
    significance.write_per_query(output_dir, judged, per_query)
    beir_ks = [1, 5, 10, 20, 100]
    curves = {"documents": (beir_ks, [metrics[f"recall_{k}"] for k in beir_ks])}
  (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
  evaluation.plot_recall(curves, str(output_dir / "recall_at_k.png"), os.path.basename(where))
  print(json.dumps(metrics))


if __name__ == "__main__":
  cli.run(main, SETTINGS)

"""Evaluating a retriever (and a reader) over a block store, as `python -m orqa_realm.evaluate`
does: which query encoder searches an index, answer and gold-paragraph recall@k on a QA set,
nDCG@10 and recall on BEIR qrels, exact match of an ORQA reader, the recall@k plot.

The query encoder of a dense index is always the retriever the index was embedded with: a
training run's checkpoint (`--workdir`: the one the index was built from, or an ORQA run trained
over it), or the pretrained weights the index records. Its settings come from the index (an ORQA
run's from the run); a given setting that contradicts them is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from etils import epath

from orqa_realm.core import checkpoints, config, run_directory
from orqa_realm.core.errors import InputError
from orqa_realm.data.answer_spans import continuation_mask
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.pretrained import resolve_model_dir
from orqa_realm.data.qa import QAExample
from orqa_realm.data.tokenization import Tokenizer
from orqa_realm.encode import embedding, runs
from orqa_realm.encode.predict import BlockReader, Prediction, exact_match_rate
from orqa_realm.index import bm25
from orqa_realm.index.fusion import FusionConfig
from orqa_realm.index.handle import open_index
from orqa_realm.index.searcher import EncodedTextSearcher, SearchResult
from orqa_realm.index.storage import IndexVersion
from orqa_realm.modeling import partitioning, retriever
from orqa_realm.modeling.hf_import import load_hf_bert, read_config

# The settings of dense, BM25 and hybrid retrieval, by flag group: every command or benchmark
# that retrieves binds these, so that the same flags mean the same thing everywhere.
DENSE_SETTINGS = (("dense retrieval", runs.RunCheckpoint), ("index", embedding.IndexSearch),
                  ("embedding", embedding.EmbedSettings), ("retriever", retriever.RetrieverConfig))
RETRIEVAL_SETTINGS = DENSE_SETTINGS + (("bm25", bm25.BM25Config), ("hybrid", FusionConfig))


def bind_retrieval_settings(binder: config.FlagBinder) -> None:
  """Binds RETRIEVAL_SETTINGS' groups to `binder`."""
  for group, settings_class in RETRIEVAL_SETTINGS:
    binder.bind(group, settings_class)

Given = Mapping[str, tuple[str, Any]]  # settings given on the command line: {field: (flag, value)}


class QueryEncoder(NamedTuple):
  """The question tower that searches an index."""
  config: retriever.RetrieverConfig
  params: dict[str, Any]  # the query tower's
  checkpoint_step: int | None  # None: pretrained weights
  orqa_run: runs.ORQARun | None  # the ORQA run it belongs to, if any


def _frozen_index_query_encoder(task: str, workdir: str, step: int | None,
                                version: IndexVersion, tokenizer: Tokenizer, given: Given,
                                mesh) -> QueryEncoder:
  """The question encoder an ORQA or ADORE run fine-tuned over the frozen index it was trained
  on (an ORQA run's reader comes with it)."""
  if task == runs.ORQA_TASK:
    orqa_run = runs.restore_orqa_run(workdir, step, mesh)
    run, params = orqa_run, orqa_run.params["retriever"]
  else:
    orqa_run, run = None, runs.restore_query_tower_run(workdir, step, mesh)
    params = run.params
  encoder = config.settle(run.retriever_config, given, fixed=retriever.ALL_FIELDS,
                          source=f"the run {workdir}")
  runs.check_index_of_run(run, version)
  embedding.check_query_encoder(version, encoder, tokenizer.fingerprint,
                                fields=retriever.ARCHITECTURE_FIELDS)
  return QueryEncoder(encoder, params, run.step, orqa_run)


def _run_query_encoder(workdir: str, step: int | None, version: IndexVersion,
                       tokenizer: Tokenizer, given: Given, mesh) -> QueryEncoder:
  """The query tower of the retriever run checkpoint the index was embedded from, reading
  queries as the index records."""
  run = runs.open_retriever_run(workdir)
  runs.check_embedded_from(version, run)
  embedding.check_query_encoder(version, run.retriever, tokenizer.fingerprint,
                                fields=retriever.ARCHITECTURE_FIELDS)
  encoder = config.settle(embedding.indexed_retriever(version), given,
                          fixed=retriever.ALL_FIELDS, source=f"the index {version.directory}")
  with checkpoints.CheckpointReader(run_directory.checkpoint_dir(workdir)) as reader:
    step = runs.checkpoint_step(reader, step)
    params = runs.restore_retriever(reader, step, encoder, mesh, tower="query")
  if version.checkpoint_step != step:
    raise InputError(f"the index was embedded from checkpoint {version.checkpoint_step}, the "
                     f"queries would be embedded with checkpoint {step}: re-embed, or pass "
                     f"--checkpoint_step={version.checkpoint_step}", path=version.directory)
  return QueryEncoder(encoder, params, step, None)


def _pretrained_query_encoder(bert: str, version: IndexVersion, tokenizer: Tokenizer,
                              given: Given) -> QueryEncoder:
  """--bert's weights as the question tower of an index embedded from them."""
  if version.checkpoint_step is not None:
    raise InputError(f"the index was embedded from checkpoint {version.checkpoint_step} of a "
                     "training run: pass that run as --workdir", path=version.directory)
  encoder = config.settle(embedding.indexed_retriever(version), given,
                          fixed=retriever.ALL_FIELDS, source=f"the index {version.directory}")
  model_dir = resolve_model_dir(bert)
  if read_config(model_dir) != encoder.bert:
    raise InputError("the index was embedded with another BERT than --bert",
                     path=version.directory, field="bert")
  embedding.check_query_encoder(version, encoder, tokenizer.fingerprint)
  params = partitioning.unbox(
      retriever.init_params(encoder, jax.random.key(0), load_hf_bert(model_dir).params))
  return QueryEncoder(encoder, retriever.tower_params(params, encoder, "query"), None, None)


def query_encoder(run: runs.RunCheckpoint, bert: str, version: IndexVersion,
                  tokenizer: Tokenizer, given: Given, mesh) -> QueryEncoder:
  """The query encoder that searches `version`: `run`'s (a retriever or ORQA run), or --bert's
  weights when no run is given; refused unless it is the retriever the index belongs to."""
  if not run.workdir:
    return _pretrained_query_encoder(bert, version, tokenizer, given)
  task = run_directory.read_run(run.workdir).task
  if task in (runs.ORQA_TASK, runs.ADORE_TASK):
    return _frozen_index_query_encoder(task, run.workdir, run.step, version, tokenizer, given,
                                       mesh)
  return _run_query_encoder(run.workdir, run.step, version, tokenizer, given, mesh)


def dense_searcher(store: BlockStore, tokenizer: Tokenizer, index: embedding.IndexSearch,
                   embed: embedding.EmbedSettings,
                   encoder_of: Callable[[IndexVersion], QueryEncoder], mesh
                   ) -> tuple[EncodedTextSearcher, dict[str, Any]]:
  """The newest version of `index` behind its query encoder (`encoder_of(version)`), and what
  they were built from (for metrics.json)."""
  version = embedding.latest_version(index.index_dir)
  searcher = open_index(version, store, backend=index.backend, mesh=mesh).searcher
  encoder = encoder_of(version)

  def embed_texts(texts: Sequence[str]) -> np.ndarray:
    return embedding.embed_queries(list(texts), encoder.params, encoder.config, tokenizer,
                                   batch_size=embed.embed_batch_size, dtype=embed.dtype,
                                   mesh=mesh)

  # The query encoder's input settings (query_length above all) change recall: recorded.
  query_settings = {name: getattr(encoder.config, name) for name in retriever.ALL_FIELDS
                    if name != "bert"}
  return EncodedTextSearcher(embed_texts, searcher), dict(
      index_version=version.version, index_checkpoint_step=version.checkpoint_step,
      index_run=runs.indexed_run(version), query_checkpoint_step=encoder.checkpoint_step,
      query_encoder=query_settings)


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


# pytrec_eval's names of what it measures, as it asks for them: as it reports them.
BEIR_MEASURES = {"ndcg_cut.10": "ndcg_cut_10", "recall.1": "recall_1", "recall.5": "recall_5",
                 "recall.10": "recall_10", "recall.20": "recall_20", "recall.100": "recall_100"}


def beir_per_query(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]
                   ) -> dict[str, dict[str, float]]:
  """{query id: {measure: value}} of each judged query: nDCG@10 and recall@k (pytrec_eval's
  reported names); a judged query the run does not rank scores 0."""
  import pytrec_eval  # pylint: disable=g-import-not-at-top

  judged = {qid: run.get(qid, {}) for qid in qrels}
  evaluator = pytrec_eval.RelevanceEvaluator(qrels, set(BEIR_MEASURES))
  return {qid: {name: float(values[name]) for name in BEIR_MEASURES.values()}
          for qid, values in evaluator.evaluate(judged).items()}


def beir_metrics(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]
                 ) -> dict[str, float]:
  """Mean nDCG@10, recall@100 (and recall@k curve points) over the judged queries."""
  per_query = beir_per_query(run, qrels)
  return {name: float(np.mean([values[name] for values in per_query.values()]))
          for name in BEIR_MEASURES.values()}


def plot_recall(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str, title: str) -> None:
  """Recall@k curves ({name: (ks, recalls)}) to a PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top

  figure, axes = pyplot.subplots(figsize=(6, 4))
  for name, (ks, recalls) in curves.items():
    axes.plot(ks, recalls, label=name, marker="." if len(ks) < 20 else None)
  axes.set(xscale="log", xlabel="k", ylabel="recall@k", ylim=(0, 1), title=title)
  axes.grid(True, alpha=0.3)
  axes.legend()
  figure.tight_layout()
  with epath.Path(path).open("wb") as f:
    figure.savefig(f, dpi=120, format="png")
  pyplot.close(figure)


def recall_curve(hits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(ks, recall@k) for every k = 1..depth of [questions, depth] hits."""
  return np.arange(1, hits.shape[1] + 1), np.logical_or.accumulate(hits, axis=1).mean(axis=0)


def read_answers(reader_run: runs.ORQARun, store: BlockStore, tokenizer: Tokenizer,
                 result: SearchResult, examples: Sequence[QAExample], mesh, *,
                 add_retrieval_scores: bool) -> tuple[dict[str, Any], list[Prediction]]:
  """The reader's answers from each question's top k blocks: (metrics, predictions).

  The reader was trained to add its retriever's scaled scores to the span logits; scores of
  another kind (BM25, fused) are not on that scale, so without `add_retrieval_scores` the spans
  are ranked by the reader alone.
  """
  reader = BlockReader(store, tokenizer, reader_run.reader_config, reader_run.settings,
                       continuation=continuation_mask(tokenizer),
                       score_scale=reader_run.retriever_config.score_scale, mesh=mesh)
  k = min(reader_run.settings.reader_beam_size, result.ids.shape[1])
  retrieval_scores = result.scores[:, :k] if add_retrieval_scores else np.zeros_like(
      result.scores[:, :k])
  predictions = reader.read(reader_run.params["reader"],
                            [example.question for example in examples], result.ids[:, :k],
                            retrieval_scores)
  return dict(exact_match=exact_match_rate(examples, predictions), reader_step=reader_run.step,
              reader_beam_size=k, reader_adds_retrieval_scores=add_retrieval_scores), predictions

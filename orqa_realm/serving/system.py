"""A trained open-domain QA system, opened from a directory, that searches and answers questions.

What a directory holds decides what the system does:

- a pipeline's workdir (`python -m orqa_realm.pipeline`): its reader run, index and block store;
- an ORQA run: its question encoder searches the index it was trained over (or another corpus's
  index embedded by the same block encoder), and its span reader answers;
- a retriever run (ICT, DPR, ANCE, REALM): its question tower searches an index it embedded;
  there is no reader, so it returns blocks.

`--index_dir` and `--block_store` replace the ones the run names, e.g. to answer over a new corpus.
`--rerank_workdir` (a cross-encoder run) reorders the first stage's top `--rerank_depth` blocks
before they are shown or read.
Readers of later kinds (generative, phrase) plug in as another `Reader`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import numpy as np

from orqa_realm.core import parallel, run_directory
from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.answer_spans import continuation_mask
from orqa_realm.data.blocks import BlockStore, open_store
from orqa_realm.data.tokenization import Tokenizer
from orqa_realm.encode import embedding, evaluation, runs
from orqa_realm.encode.predict import BlockReader
from orqa_realm.encode.rerank import CrossEncoderReranker, RerankSettings
from orqa_realm.index.rerank import RerankingSearcher
from orqa_realm.index.searcher import SearchResult, TextSearcher

# Where a pipeline's workdir holds its stages' outputs (orqa_realm/workflow/open_qa.py writes
# them there) and its stage records.
PIPELINE_RECORDS, PIPELINE_READER, PIPELINE_RETRIEVER = "pipeline", "reader", "retriever"
PIPELINE_INDEX, PIPELINE_BLOCKS = "index", "blocks"


@dataclasses.dataclass(frozen=True)
class SystemSource:
  """Which trained system answers, over which corpus."""
  workdir: str = setting(
      "", "A pipeline's --workdir, an ORQA run (answers) or a retriever run (blocks only).")
  index_dir: str = setting(
      "", "The index to search; empty: the one the run names (an ORQA run's, a pipeline's). Any "
      "corpus's index embedded by the run's block encoder.")
  block_store: str = setting("", "The index's block store; empty: the one the run names.")
  checkpoint_step: int = setting(-1, "The run's checkpoint; -1: the newest.")
  index_backend: Literal["exact", "scann"] = setting(
      "exact", "Searcher: exact top-k on the devices, or the version's ScaNN index.")


@dataclasses.dataclass(frozen=True)
class Hit:
  """A retrieved block."""
  block: int
  document_id: str
  title: str
  text: str
  score: float  # the retriever's score


@dataclasses.dataclass(frozen=True)
class Answer:
  """A question's answer, with the blocks it was read from."""
  question: str
  answer: str | None  # None: the system has no reader
  score: float | None  # the span's reader logit plus its block's scaled retrieval score
  source: Hit | None  # the block it was read from
  source_rank: int | None  # that block's rank among the retrieved (0: first)
  hits: list[Hit]  # the top blocks

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


class Reader(Protocol):
  """Reads a question's top blocks into an answer."""
  num_blocks: int  # k: how many top blocks it reads

  def read(self, questions: Sequence[str], result: SearchResult
           ) -> list[tuple[str, float, int]]:  # (answer, score, block rank) per question
    ...


class SpanReader:
  """ORQA's span reader: the best span of the top k blocks, its logit plus the block's scaled
  retrieval score (as it was trained), or its logit alone when the blocks were ranked otherwise
  (`adds_retrieval_scores=False`: reranked scores are not on the scale it learned)."""

  def __init__(self, run: runs.ORQARun, store: BlockStore, tokenizer: Tokenizer, mesh,
               adds_retrieval_scores: bool = True):
    self.run, self.adds_retrieval_scores = run, adds_retrieval_scores
    self.num_blocks = run.settings.reader_beam_size
    self._reader = BlockReader(store, tokenizer, run.reader_config, run.settings,
                               continuation=continuation_mask(tokenizer),
                               score_scale=run.retriever_config.score_scale, mesh=mesh)

  def read(self, questions: Sequence[str], result: SearchResult) -> list[tuple[str, float, int]]:
    k = min(self.num_blocks, result.ids.shape[1])
    scores = result.scores[:, :k]
    predictions = self._reader.read(self.run.params["reader"], questions, result.ids[:, :k],
                                    scores if self.adds_retrieval_scores else np.zeros_like(scores))
    return [(p.answer, p.score, p.block_rank) for p in predictions]


@dataclasses.dataclass(frozen=True)
class SystemPaths:
  """Where a system's parts are."""
  run: str  # the run whose query encoder searches (and whose reader reads, for ORQA)
  index_dir: str
  block_store: str
  bert: str  # the tokenizer's model
  task: str


def _run_setting(description: run_directory.RunDescription, *keys: str) -> str:
  value: Any = description.settings
  for key in keys:
    value = value.get(key, {}) if isinstance(value, dict) else {}
  return value if isinstance(value, str) else ""


def locate(source: SystemSource) -> SystemPaths:
  """The run, index, store and tokenizer of `source`, the given paths replacing the run's."""
  if not source.workdir:
    raise InputError("--workdir is required", field="workdir")
  workdir, index_dir, block_store = source.workdir, "", ""
  if os.path.isdir(os.path.join(workdir, PIPELINE_RECORDS)):
    pipeline = workdir
    has_reader = os.path.exists(os.path.join(workdir, PIPELINE_READER, run_directory.RUN_FILE))
    workdir = os.path.join(pipeline, PIPELINE_READER if has_reader else PIPELINE_RETRIEVER)
    index_dir = os.path.join(pipeline, PIPELINE_INDEX)
    block_store = os.path.join(pipeline, PIPELINE_BLOCKS)
  description = run_directory.read_run(workdir)
  index_dir = source.index_dir or index_dir or _run_setting(description, "task", "index_dir") or (
      _run_setting(description, "index", "index_dir"))
  if not index_dir:
    raise InputError(f"the run {workdir} names no index: pass --index_dir (one embedded from "
                     "it, python -m orqa_realm.embed)", field="index_dir")
  block_store = source.block_store or block_store or runs.trained_block_store(description)
  return SystemPaths(workdir, index_dir, block_store, runs.trained_bert(description),
                     description.task)


class QASystem:
  """Searches a corpus with a trained query encoder and, with a reader, answers from the top
  blocks."""

  def __init__(self, store: BlockStore, searcher: TextSearcher, reader: Reader | None,
               description: dict[str, Any]):
    self.store, self.searcher, self.reader = store, searcher, reader
    self.description = description  # what it was built from (for /info and the console)

  @classmethod
  def open(cls, source: SystemSource, rerank_settings: RerankSettings = RerankSettings(),
           mesh=None) -> QASystem:
    """The system `source` names, its first stage reranked by `rerank_settings`' cross-encoder
    when it names one."""
    mesh = mesh if mesh is not None else parallel.make_mesh()
    located = locate(source)
    store, tokenizer = open_store(located.block_store, located.bert)
    encoders: list[evaluation.QueryEncoder] = []

    def encoder_of(version):
      encoders.append(evaluation.query_encoder(
          runs.RunCheckpoint(located.run, source.checkpoint_step), located.bert, version,
          tokenizer, {}, mesh))
      return encoders[-1]

    searcher, info = evaluation.dense_searcher(
        store, tokenizer, embedding.IndexSearch(located.index_dir, source.index_backend),
        embedding.EmbedSettings(embed_dtype="float32"), encoder_of, mesh)
    if rerank_settings.workdir:
      reranker = CrossEncoderReranker(
          runs.restore_cross_encoder_run(rerank_settings.workdir, rerank_settings.step, mesh),
          store, tokenizer, rerank_settings, mesh)
      searcher = RerankingSearcher(searcher, reranker, rerank_settings.depth,
                                   rerank_settings.first_stage_weight)
      info.update(rerank=dict(workdir=reranker.run.workdir, checkpoint_step=reranker.run.step,
                              depth=rerank_settings.depth,
                              first_stage_weight=rerank_settings.first_stage_weight))
    orqa_run = encoders[0].orqa_run
    reader = (SpanReader(orqa_run, store, tokenizer, mesh,
                         adds_retrieval_scores=not rerank_settings.workdir)
              if orqa_run is not None else None)
    description = dict(dataclasses.asdict(located), num_blocks=len(store),
                       reader_step=orqa_run.step if orqa_run else None, **info)
    return cls(store, searcher, reader, description)

  def _hits(self, ids: np.ndarray, scores: np.ndarray) -> list[Hit]:
    return [Hit(int(block), self.store.document_id(int(block)), self.store.title(int(block)),
                self.store.text(int(block)), float(score)) for block, score in zip(ids, scores)]

  def search(self, questions: Sequence[str], k: int) -> list[list[Hit]]:
    """The top `k` blocks of each question."""
    result = self.searcher.search_texts(list(questions), min(k, self.searcher.num_rows))
    return [self._hits(ids, scores) for ids, scores in zip(result.ids, result.scores)]

  def answer(self, questions: Sequence[str], k: int) -> list[Answer]:
    """Each question's answer (None without a reader) and its top `k` blocks."""
    depth = min(max(k, self.reader.num_blocks if self.reader else 0), self.searcher.num_rows)
    result = self.searcher.search_texts(list(questions), depth)
    if self.reader is None:
      return [Answer(question, None, None, None, None, self._hits(ids[:k], scores[:k]))
              for question, ids, scores in zip(questions, result.ids, result.scores)]
    answers = []
    for question, (answer, score, rank), ids, scores in zip(
        questions, self.reader.read(questions, result), result.ids, result.scores):
      [source] = self._hits(ids[rank:rank + 1], scores[rank:rank + 1])
      answers.append(Answer(question, answer, score, source, rank,
                            self._hits(ids[:k], scores[:k])))
    return answers

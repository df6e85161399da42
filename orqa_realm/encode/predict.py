"""Open-domain QA prediction: retrieve blocks for a question, read them, answer with the best span.

As in ORQA, the answer is the argmax over (block, span) of the top k blocks of the span's reader
logit plus its block's retrieval score, mapped back to the block's original text. Used by the
ORQA task's periodic evaluation and by `python -m orqa_realm.evaluate` on a checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from orqa_realm.core import parallel
from orqa_realm.core.config import setting
from orqa_realm.data.answer_spans import BlockAnswerMatcher
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.qa import QAExample
from orqa_realm.data.reader_inputs import enumerate_spans, reader_batch, span_text
from orqa_realm.data.tokenization import TokenBatch, Tokenizer
from orqa_realm.data.answers import exact_match, gold_hits, recall_at_k
from orqa_realm.encode import embedding
from orqa_realm.index.exact import next_power_of_two
from orqa_realm.index.searcher import Searcher, SearchResult
from orqa_realm.modeling.reader import ReaderConfig, SpanReader
from orqa_realm.modeling.retriever import RetrieverConfig


class Prediction(NamedTuple):
  answer: str
  score: float  # the span's reader logit + its block's retrieval logit
  block: int  # the block the answer was read from
  block_rank: int  # its rank among the question's retrieved blocks (0: first)
  # The best spans over all k blocks, this one first, as (answer, score, block) triples.
  top_spans: tuple[tuple[str, float, int], ...] = ()


TOP_SPANS = 5  # spans listed per prediction


@functools.lru_cache(maxsize=8)
def make_span_scorer(config: ReaderConfig, dtype, mesh):
  """Jitted (reader params, inputs [n, length], block_mask [n, length]) -> [n, spans] span logits,
  the rows split over `mesh` and the params where they are; cached so that repeated evaluations
  reuse compiled shapes."""
  model = SpanReader(config, dtype)

  def score(params, inputs: TokenBatch, block_mask: jax.Array) -> jax.Array:
    return model.apply({"params": params}, inputs, block_mask).logits

  batch = parallel.batch_sharding(mesh)
  return jax.jit(score, in_shardings=(None, batch, batch),
                 out_shardings=parallel.replicated(mesh))


@dataclasses.dataclass(frozen=True)
class ReaderSettings:
  """How the reader reads retrieved blocks (recorded with an ORQA run: evaluation reads alike)."""
  reader_length: int = setting(
      320, "Longest reader input [CLS] question [SEP] block [SEP], in wordpieces.")
  reader_question_length: int = setting(
      32, "Question wordpieces kept in the reader input.")
  reader_beam_size: int = setting(
      5, "k: top blocks the reader reads per question (full loss, prediction).")


class BlockReader:
  """Reads given blocks for each question with a span reader and returns the best spans."""

  def __init__(self, store: BlockStore, tokenizer: Tokenizer, reader_config: ReaderConfig,
               settings: ReaderSettings, *, continuation: np.ndarray, score_scale: float = 1.0,
               batch_size: int = 8, dtype=jnp.float32, mesh=None):
    """`score_scale` multiplies the retrieval scores added to span logits (the retriever's
    `score_scale`, with which the reader was trained)."""
    self.store, self.tokenizer = store, tokenizer
    self.reader_config, self.settings = reader_config, settings
    self.score_scale = score_scale
    self.continuation = continuation
    self.mesh = mesh if mesh is not None else parallel.make_mesh()
    # Questions per reader call: a multiple of the devices, so that questions x k rows split.
    self.batch_size = math.ceil(batch_size / self.mesh.size) * self.mesh.size
    self.dtype = dtype

  def read(self, reader_params: Any, questions: Sequence[str], block_ids: np.ndarray,
           retrieval_scores: np.ndarray) -> list[Prediction]:
    """The best span of each question's blocks.

    Args:
      reader_params: the span reader's parameters.
      block_ids: [questions, k] blocks to read for each question.
      retrieval_scores: [questions, k] their retrieval scores, scaled by `score_scale` and added
        to the span logits (zeros: the reader alone ranks).
    """
    scorer = make_span_scorer(self.reader_config, self.dtype, self.mesh)
    reader_params = jax.device_put(reader_params, parallel.replicated(self.mesh))
    question_ids = self.tokenizer.tokenize(questions)
    # Few questions (a server's request) are not padded to a whole batch: to a power of two
    # (so that few shapes compile) that splits over the devices.
    batch_size = math.ceil(min(self.batch_size, next_power_of_two(len(questions)))
                           / self.mesh.size) * self.mesh.size
    predictions = []
    for start in range(0, len(questions), batch_size):
      count = min(batch_size, len(questions) - start)
      # The last chunk is topped up with copies of its first question, whose results are dropped.
      rows = np.resize(np.arange(start, start + count), batch_size)
      batch = reader_batch(
          self.store, [question_ids[row] for row in rows], block_ids[rows],
          max_length=self.settings.reader_length,
          max_question_length=self.settings.reader_question_length,
          max_span_width=self.reader_config.max_span_width, continuation=self.continuation)
      num_questions, k, length = batch.inputs.token_ids.shape
      flat = lambda array: array.reshape(num_questions * k, *array.shape[2:])
      logits = scorer(reader_params,
                      parallel.to_global(TokenBatch(*(flat(a) for a in batch.inputs)), self.mesh),
                      parallel.to_global(flat(batch.block_mask), self.mesh))
      logits = np.asarray(jax.device_get(logits)).reshape(num_questions, k, -1)
      retrieval_logits = self.score_scale * retrieval_scores[rows]
      scores = logits + retrieval_logits[:, :, None]  # [questions, k, spans]
      spans = enumerate_spans(length, self.reader_config.max_span_width)
      for row in range(count):
        flat = scores[row].ravel()
        best = np.argsort(-flat, kind="stable")[:TOP_SPANS]  # invalid spans score -1e9: last
        top_spans = []
        for rank, span in zip(*np.unravel_index(best, scores[row].shape)):
          block = int(block_ids[rows[row], rank])
          answer = span_text(self.store.text(block), self.store.token_char_spans(block),
                             int(batch.block_offsets[row, rank]), int(spans.starts[span]),
                             int(spans.ends[span]))
          top_spans.append((answer, float(scores[row, rank, span]), block))
        rank = int(best[0] // scores.shape[2])
        answer, score, block = top_spans[0]
        predictions.append(Prediction(answer, score, block, rank, tuple(top_spans)))
    return predictions

class OpenQAPredictor:
  """Answers questions with a retriever (query tower + a searcher over the store's blocks) and a
  span reader.

  `params` of the methods are ORQA's: {"retriever": query tower params, "reader": reader params}.
  """

  def __init__(self, store: BlockStore, searcher: Searcher, tokenizer: Tokenizer,
               retriever_config: RetrieverConfig, reader_config: ReaderConfig,
               settings: ReaderSettings, *, continuation: np.ndarray, batch_size: int = 8,
               dtype=jnp.float32, mesh=None):
    self.reader = BlockReader(store, tokenizer, reader_config, settings,
                              continuation=continuation, score_scale=retriever_config.score_scale,
                              batch_size=batch_size, dtype=dtype, mesh=mesh)
    self.searcher, self.retriever_config = searcher, retriever_config

  def retrieve(self, params: dict[str, Any], questions: Sequence[str], depth: int) -> SearchResult:
    """The top `depth` blocks of each question (ids and retrieval scores [questions, depth])."""
    queries = embedding.embed_queries(list(questions), params["retriever"], self.retriever_config,
                                      self.reader.tokenizer, dtype=self.reader.dtype,
                                      mesh=self.reader.mesh)
    return self.searcher.search(queries, min(depth, self.searcher.num_rows))

  def predict(self, params: dict[str, Any], examples: Sequence[QAExample],
              depth: int) -> tuple[list[Prediction], SearchResult]:
    """Predictions for `examples`, and their top `depth` (>= k) retrieved blocks."""
    k = self.reader.settings.reader_beam_size
    result = self.retrieve(params, [example.question for example in examples], max(depth, k))
    k = min(k, result.ids.shape[1])
    predictions = self.reader.read(params["reader"], [example.question for example in examples],
                                   result.ids[:, :k], result.scores[:, :k])
    return predictions, result


def exact_match_rate(examples: Sequence[QAExample], predictions: Sequence[Prediction]) -> float:
  """Fraction of predictions that match an answer exactly (SQuAD EM; regex for CuratedTREC)."""
  return float(np.mean([exact_match(prediction.answer, example.answers, example.kind)
                        for prediction, example in zip(predictions, examples)]))


def qa_metrics(examples: Sequence[QAExample], predictions: Sequence[Prediction],
               result: SearchResult, store: BlockStore, matcher: BlockAnswerMatcher,
               ks: Sequence[int]) -> dict[str, float]:
  """Exact match of the predictions, answer recall@k of the retrieval, and gold-paragraph
  recall@k where every example names its paragraph (SQuAD)."""
  metrics = {"exact_match": exact_match_rate(examples, predictions)}
  ks = [k for k in ks if k <= result.ids.shape[1]]
  hits = np.stack([matcher.has_answer(ids, example.answers, example.kind)
                   for ids, example in zip(result.ids, examples)])
  metrics.update({f"answer_recall@{k}": value for k, value in recall_at_k(hits, ks).items()})
  if all(example.gold_document_id for example in examples):
    gold = gold_hits(result.ids, store, examples)
    metrics.update({f"gold_recall@{k}": value for k, value in recall_at_k(gold, ks).items()})
  return metrics


def write_predictions(path: str, examples: Sequence[QAExample], predictions: Sequence[Prediction],
                      result: SearchResult, store: BlockStore, matcher: BlockAnswerMatcher,
                      num_blocks: int) -> None:
  """One JSON line per question: the answer, whether it is correct, and its top blocks."""
  with epath.Path(path).open("w", encoding="utf-8") as f:
    for example, prediction, ids, scores in zip(examples, predictions, result.ids, result.scores):
      ids, scores = ids[:num_blocks], scores[:num_blocks]
      contains = matcher.has_answer(ids, example.answers, example.kind)
      record = dict(
          qid=example.qid, question=example.question, answers=list(example.answers),
          prediction=prediction.answer,
          correct=exact_match(prediction.answer, example.answers, example.kind),
          score=prediction.score, block=prediction.block, block_rank=prediction.block_rank,
          top_spans=[dict(answer=answer, score=score, block=block)
                     for answer, score, block in prediction.top_spans],
          top_blocks=[dict(block=int(block), document_id=store.document_id(int(block)),
                           title=store.title(int(block)), retrieval_score=float(score),
                           has_answer=bool(has))
                      for block, score, has in zip(ids, scores, contains)])
      f.write(json.dumps(record, ensure_ascii=False) + "\n")

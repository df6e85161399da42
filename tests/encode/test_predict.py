"""Prediction: the best (block, span) of the summed scores, mapped back to the block text; metrics
and the predictions file."""

import json

import jax
import numpy as np

from orqa_realm.data.answer_spans import BlockAnswerMatcher, continuation_mask
from orqa_realm.data.qa import QAExample
from orqa_realm.data.reader_inputs import enumerate_spans, reader_batch
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.index.searcher import SearchResult
from orqa_realm.modeling.reader import ReaderConfig, SpanReader, init_params as init_reader_params
from orqa_realm.encode.predict import (BlockReader, Prediction, ReaderSettings, qa_metrics,
                                write_predictions)
from tests.tasks.tiny_ict import TINY_BERT


def test_the_answer_is_the_argmax_of_reader_plus_scaled_retrieval_scores(squad_block_store,
                                                                        tokenizer):
  store = squad_block_store
  reader_config = ReaderConfig(TINY_BERT, span_hidden_size=8, max_span_width=4)
  settings = ReaderSettings(reader_length=96, reader_question_length=12, reader_beam_size=3)
  continuation = continuation_mask(tokenizer)
  reader = BlockReader(store, tokenizer, reader_config, settings, continuation=continuation,
                       score_scale=5.0, batch_size=2)
  params = dict(reader=init_reader_params(reader_config, jax.random.key(0)))
  questions = ["Who won Super Bowl 50?", "Where is Warsaw?", "What is a teacher?"]
  rng = np.random.default_rng(0)
  block_ids = rng.integers(0, len(store), size=(3, 3))
  retrieval_scores = rng.normal(size=(3, 3)).astype(np.float32)
  predictions = reader.read(params["reader"], questions, block_ids, retrieval_scores)

  batch = reader_batch(store, tokenizer.tokenize(questions), block_ids, max_length=96,
                       max_question_length=12, max_span_width=4, continuation=continuation)
  length = batch.inputs.token_ids.shape[-1]
  logits = SpanReader(reader_config).apply(
      {"params": params["reader"]}, TokenBatch(*(a.reshape(9, length) for a in batch.inputs)),
      batch.block_mask.reshape(9, length)).logits
  scores = np.asarray(logits).reshape(3, 3, -1) + 5.0 * retrieval_scores[:, :, None]
  spans = enumerate_spans(length, 4)
  # The reader runs 2 blocks a call and this check all 9 at once: on CPUs without AVX-512 the
  # two batch shapes take matmul kernels that differ in the last float32 bit.
  for question, prediction in enumerate(predictions):
    order = np.argsort(-scores[question].ravel(), kind="stable")
    np.testing.assert_allclose([score for _, score, _ in prediction.top_spans],
                               scores[question].ravel()[order[:5]], rtol=1e-6)
    rank, span = np.unravel_index(order[0], scores[question].shape)
    assert (prediction.block_rank, prediction.block) == (rank, block_ids[question, rank])
    np.testing.assert_allclose(prediction.score, scores[question, rank, span], rtol=1e-6)
    block = int(block_ids[question, rank])
    offset = int(batch.block_offsets[question, rank])
    char_spans = store.token_char_spans(block)
    first, last = spans.starts[span] - offset, spans.ends[span] - offset
    assert 0 <= first <= last < len(char_spans)  # a span of the block, never of the question
    assert prediction.answer == store.text(block)[char_spans[first][0]:char_spans[last][1]]
    assert prediction.top_spans[0] == (prediction.answer, prediction.score, prediction.block)


def test_metrics_and_predictions_file(squad_block_store, tmp_path):
  store = squad_block_store
  text = store.text(0)
  examples = [QAExample("Who won?", ("Denver Broncos",), gold_document_id=store.document_id(0)),
              QAExample("Who lost?", ("Carolina Panthers",), gold_document_id="elsewhere/0")]
  far = len(store) - 1
  result = SearchResult(ids=np.array([[0, far], [far, 0]]),
                        scores=np.array([[2.0, 1.0], [3.0, 0.5]], np.float32))
  predictions = [Prediction("the Denver Broncos", 7.0, 0, 0), Prediction("Broncos", 1.0, far, 0)]
  assert "Denver Broncos" in text and "Carolina Panthers" in text
  matcher = BlockAnswerMatcher(store)
  metrics = qa_metrics(examples, predictions, result, store, matcher, (1, 2))
  assert metrics == {"exact_match": 0.5, "answer_recall@1": 0.5, "answer_recall@2": 1.0,
                     "gold_recall@1": 0.5, "gold_recall@2": 0.5}
  write_predictions(str(tmp_path / "p.jsonl"), examples, predictions, result, store, matcher,
                    num_blocks=2)
  records = [json.loads(line) for line in open(tmp_path / "p.jsonl", encoding="utf-8")]
  assert [r["correct"] for r in records] == [True, False]
  assert records[0]["top_spans"] == []  # none given
  assert records[1]["top_blocks"][1] == dict(
      block=0, document_id=store.document_id(0), title=store.title(0), retrieval_score=0.5,
      has_answer=True)

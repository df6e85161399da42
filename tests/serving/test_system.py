"""A trained system opened from a pipeline's workdir answers from the blocks it retrieves; a
retriever run alone returns blocks; the console display marks the answer in its block."""

import numpy as np
import pytest

from orqa_realm.core.errors import InputError
from orqa_realm.encode.rerank import RerankSettings
from orqa_realm.serving import display
from orqa_realm.serving.system import Answer, Hit, QASystem, SystemSource

QUESTIONS = ["Which NFL team represented the AFC at Super Bowl 50?",
             "What is the name of the region the Normans gave their name to?"]


def test_a_pipeline_answers_from_its_reader_over_its_index(tiny_system, pipeline_workdir):
  assert tiny_system.description["run"] == str(pipeline_workdir / "reader")
  assert tiny_system.description["reader_step"] == 8
  answers = tiny_system.answer(QUESTIONS, k=4)
  hits = tiny_system.search(QUESTIONS, k=4)
  for answer, question_hits in zip(answers, hits):
    assert [hit.block for hit in answer.hits] == [hit.block for hit in question_hits]
    scores = [hit.score for hit in answer.hits]
    assert scores == sorted(scores, reverse=True) and len(scores) == 4
    # The answer is a span of the block it was read from, one of the reader's top k.
    assert answer.answer and answer.answer in answer.source.text
    assert answer.source_rank < tiny_system.reader.num_blocks
    assert answer.source.text == tiny_system.store.text(answer.source.block)


def test_a_retriever_run_returns_blocks_only(tiny_system, pipeline_workdir):
  retriever = QASystem.open(SystemSource(workdir=str(pipeline_workdir / "retriever"),
                                         index_dir=str(pipeline_workdir / "index"),
                                         block_store=str(pipeline_workdir / "blocks")))
  assert retriever.reader is None
  [answer] = retriever.answer(QUESTIONS[:1], k=3)
  assert answer.answer is None and answer.source is None and len(answer.hits) == 3
  with pytest.raises(InputError, match="names no index: pass --index_dir"):
    QASystem.open(SystemSource(workdir=str(pipeline_workdir / "retriever")))


def test_the_display_marks_the_answer_in_its_block():
  hit = Hit(7, "doc", "Super Bowl 50", "The Denver Broncos defeated the Carolina Panthers.", 0.5)
  other = Hit(9, "doc2", "Carolina", "x" * 400, 0.4)
  answer = Answer("Who won?", "Denver Broncos", 12.5, hit, 0, [hit, other])
  text = display.format_answer(answer, display.PLAIN_MARKS)
  assert text.splitlines()[:3] == [
      "Q: Who won?",
      "A: **Denver Broncos**  (score 12.50, from block 7: Super Bowl 50, retrieved #1)",
      "  1. Super Bowl 50  (block 7, score 0.500)"]
  assert "The **Denver Broncos** defeated" in text
  assert "x" * 320 + "..." in text and "x" * 321 not in text
  # Elsewhere than its source, an answer is marked only as whole words.
  year = Hit(8, "doc3", "Seasons", "The 2015 season; 15 wins.", 0.3)
  fifteen = Answer("How many?", "15", 3.0, Hit(1, "d", "T", "a 15–1 record", 0.9), 0, [year])
  assert "The 2015 season; **15** wins." in display.format_answer(fifteen, display.PLAIN_MARKS)
  assert display.find_answer("in 2015", "15") == -1
  assert display.find_answer("in 2015", "15", within_words=True) == 5
  assert np.isclose(answer.to_json()["source"]["score"], 0.5)


def test_a_cross_encoder_reranks_what_the_system_shows_and_reads(tiny_system, pipeline_workdir,
                                                                tiny_cross_encoder_run):
  reranked = QASystem.open(SystemSource(workdir=str(pipeline_workdir)),
                           RerankSettings(workdir=tiny_cross_encoder_run, depth=6))
  assert reranked.description["rerank"]["workdir"] == tiny_cross_encoder_run
  first_stage = tiny_system.search(QUESTIONS, k=6)
  for question, first, second in zip(QUESTIONS, first_stage, reranked.search(QUESTIONS, k=6)):
    blocks = np.array([[hit.block for hit in second]])
    assert sorted(blocks[0]) == sorted(hit.block for hit in first)  # the same six, reordered
    # Each shown score is the cross-encoder's own score of the pair, best first.
    scores = reranked.searcher.score([question], blocks)[0]
    np.testing.assert_allclose([hit.score for hit in second], scores, rtol=1e-5)
    assert list(scores) == sorted(scores, reverse=True)
  assert not reranked.reader.adds_retrieval_scores
  for answer, hits in zip(reranked.answer(QUESTIONS, k=6), reranked.search(QUESTIONS, k=6)):
    assert [hit.block for hit in answer.hits] == [hit.block for hit in hits]
    assert answer.answer in answer.source.text

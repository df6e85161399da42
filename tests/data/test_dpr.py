"""DPR training examples on real data: positives by DPR's rules, hard negatives that never
contain an answer or a judged document."""

import dataclasses

import pytest

from orqa_realm.data.blocks import build_block_store
from orqa_realm.data.documents import Document
from orqa_realm.data.dpr import beir_examples, document_blocks, qa_examples
from orqa_realm.data.qa import read_squad
from orqa_realm.index.bm25 import BM25Searcher
from orqa_realm.data.answers import has_answer
from tests.conftest import DEMO_SQUAD


@pytest.fixture(scope="module")
def squad_questions():
  return read_squad(DEMO_SQUAD)[::40]  # 201 real questions over all 36 articles


def test_squad_positives_are_gold_blocks_with_an_answer_and_negatives_never_answer(
    squad_block_store, squad_questions):
  store = squad_block_store
  rankings = BM25Searcher.build(store).search_texts([q.question for q in squad_questions], 100).ids
  built = qa_examples(squad_questions, store, rankings, num_hard_negatives=3, seed=0)
  assert built.num_dropped == 0 and len(built.examples) == len(squad_questions)
  blocks_of = document_blocks(store)
  num_with_answer = 0
  for question, example in zip(squad_questions, built.examples):
    assert store.document_id(example.positive) == question.gold_document_id
    gold_with_answer = [b for b in blocks_of[question.gold_document_id]
                        if has_answer(store.text(b), question.answers)]
    # The gold block with an answer; when none has it as whole words ("Luther's"), still gold.
    assert example.positive in gold_with_answer or not gold_with_answer
    num_with_answer += bool(gold_with_answer)
    assert len(example.hard_negatives) == 3 and example.positive not in example.hard_negatives
    for negative in example.hard_negatives:
      assert not has_answer(store.text(negative), question.answers)
      assert store.document_id(negative) != question.gold_document_id
  assert num_with_answer >= 0.95 * len(squad_questions)
  # Deterministic: the same examples again.
  assert qa_examples(squad_questions, store, rankings, 3, seed=0) == built


def test_without_a_gold_paragraph_the_positive_is_the_best_bm25_block_with_an_answer(
    squad_block_store, squad_questions):
  store = squad_block_store
  questions = [dataclasses.replace(q, gold_document_id=None) for q in squad_questions]
  rankings = BM25Searcher.build(store).search_texts([q.question for q in questions], 20).ids
  built = qa_examples(questions, store, rankings, num_hard_negatives=2)
  answerable = [(q, ranking) for q, ranking in zip(questions, rankings)
                if any(has_answer(store.text(b), q.answers) for b in ranking)]
  assert built.num_dropped == len(questions) - len(answerable) > 0
  for (question, ranking), example in zip(answerable, built.examples):
    first = next(b for b in ranking if has_answer(store.text(b), question.answers))
    assert example.positive == first
    assert not any(has_answer(store.text(b), question.answers) for b in example.hard_negatives)
    # BM25's order: each negative is the next block of the ranking without an answer.
    allowed = [b for b in ranking if not has_answer(store.text(b), question.answers)]
    assert list(example.hard_negatives) == allowed[:2]


def test_beir_negatives_are_never_judged_documents_and_run_short_to_random(tokenizer, tmp_path):
  documents = [Document(f"d{i}", f"Title {i}", text) for i, text in enumerate([
      "Aspirin reduces the risk of heart attack.",
      "Aspirin is an anti-inflammatory drug and reduces fever.",
      "Heart attacks are caused by blocked arteries.",
      "Vitamin C does not prevent the common cold.",
      "The common cold is caused by rhinoviruses.",
      "Exercise lowers blood pressure."])]
  store = build_block_store(documents, tokenizer, tmp_path / "store")
  assert {doc: blocks.tolist() for doc, blocks in document_blocks(store).items()} == {
      f"d{i}": [i] for i in range(6)}
  queries = {"q1": "Does aspirin prevent heart attacks?", "q2": "Does vitamin C cure colds?",
             "q3": "A query nobody judged", "q4": "A query whose document is not in the store"}
  # d3 was judged and found not relevant to q1.
  qrels = {"q1": {"d0": 1, "d3": 0}, "q2": {"d3": 1}, "q4": {"d99": 1}}
  searcher = BM25Searcher.build(store)
  # A depth of 2: q1's BM25 top 2 is two judged documents, so its negatives must be drawn at
  # random (from the unjudged ones).
  rankings = {qid: searcher.search_texts([text], 2).ids[0] for qid, text in queries.items()}
  built = beir_examples(queries, qrels, store, rankings, num_hard_negatives=2, seed=0)
  assert built.num_dropped == 1  # q4 (q3 has no judgement, so is no training query at all)
  assert [(e.question, e.positive) for e in built.examples] == [
      (queries["q1"], 0), (queries["q2"], 3)]
  assert sorted(store.document_id(b) for b in rankings["q1"]) == ["d0", "d3"]
  for qid, example in zip(["q1", "q2"], built.examples):
    unjudged = [b for b in rankings[qid] if store.document_id(int(b)) not in qrels[qid]]
    assert list(example.hard_negatives[:len(unjudged)]) == unjudged[:2]
    assert len(set(example.hard_negatives)) == 2
    assert not {store.document_id(b) for b in example.hard_negatives} & set(qrels[qid])
  assert built.num_random_negatives >= 2
  assert beir_examples(queries, qrels, store, rankings, 2, seed=0) == built

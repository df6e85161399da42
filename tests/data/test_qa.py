"""QA readers on the real files in ../shared/data, and their errors on bad input."""

import gzip
import json

import numpy as np
import pytest

from orqa_realm.data import qa
from orqa_realm.data.qa import every_nth, question_indices
from orqa_realm.data.documents import load_documents
from orqa_realm.core.errors import InputError
from tests.conftest import DEMO_SQUAD


@pytest.mark.parametrize("spec, count", [
    ("nq_open:nq_open/NQ-open.dev.jsonl", 3610),
    ("nq_open:nq_open/NQ-open.efficientqa.dev.1.1.jsonl", 1800),
    ("webquestions:webquestions/test.json", 2032),
    ("webquestions:webquestions/trainmodel.json", 2834),
    ("curatedtrec:curatedtrec/large2180-test.tsv", 694),
    ("curatedtrec:curatedtrec/large2180-train.tsv", 1479),
    ("triviaqa:triviaqa/topics.dpr.trivia.test.txt.gz", 11313),
    ("squad:squad/dev-v1.1.public36.json.gz", 8038),
])
def test_real_file_counts(shared_data, spec, count):
  data_format, path = spec.split(":")
  examples = qa.load_qa_dataset(f"{data_format}:{shared_data / path}")
  assert len(examples) == count
  assert all(example.question and example.answers for example in examples)
  assert {example.kind for example in examples} == (
      {"regex"} if data_format == "curatedtrec" else {"text"})


def test_real_examples_parse_as_published(shared_data):
  nq = qa.load_qa_dataset(f"nq_open:{shared_data}/nq_open/NQ-open.dev.jsonl")
  assert nq[0] == qa.QAExample("when was the last time anyone was on the moon",
                               ("14 December 1972 UTC", "December 1972"), qid="1")
  trivia = qa.load_qa_dataset(f"triviaqa:{shared_data}/triviaqa/topics.dpr.trivia.test.txt.gz")
  # A CSV-quoted answer list with doubled quotes inside.
  assert "'30s" in trivia[12].answers and "1930's" in trivia[12].answers
  trec = qa.load_qa_dataset(f"curatedtrec:{shared_data}/curatedtrec/large2180-train.tsv")
  # The one pattern with an escaped tab in it keeps all of its text.
  assert "\t1 Sv" in next(example for example in trec if example.qid == "462").answers[0]


def test_squad_questions_point_at_their_paragraphs():
  questions = qa.load_qa_dataset(f"squad:{DEMO_SQUAD}")
  documents = {document.doc_id: document for document in load_documents(f"squad:{DEMO_SQUAD}")}
  assert len(questions) == 8038 and len(documents) == 1572
  for question in questions[::50]:
    assert any(answer in documents[question.gold_document_id].text for answer in question.answers)


def write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  return path


def test_malformed_jsonl_line_is_located(tmp_path):
  path = write(tmp_path, "nq.jsonl", '{"question": "q", "answer": ["a"]}\n{"question": "q2", \n')
  with pytest.raises(InputError, match=r"nq\.jsonl, line 2: malformed JSON"):
    qa.read_nq_open(path)


def test_missing_field_is_named(tmp_path):
  path = write(tmp_path, "nq.jsonl", '{"question": "q", "answer": ["a"]}\n{"question": "q2"}\n')
  with pytest.raises(InputError, match=r"nq\.jsonl, line 2, field 'answer': missing field"):
    qa.read_nq_open(path)


def test_empty_answer_list_is_refused(tmp_path):
  path = write(tmp_path, "nq.jsonl", '{"question": "q", "answer": []}\n')
  with pytest.raises(InputError, match=r"line 1, field 'answer': empty list"):
    qa.read_nq_open(path)
  path = write(tmp_path, "trivia.txt", "Who?\t[]\n")
  with pytest.raises(InputError, match=r"trivia\.txt, line 1, field 'answers': empty list"):
    qa.read_triviaqa_dpr(path)
  path = write(tmp_path, "wq.json", json.dumps([{"qId": "x", "qText": "q", "answers": []}]))
  with pytest.raises(InputError, match=r"wq\.json \[record 0\], field 'answers': empty list"):
    qa.read_webquestions(path)
  squad = {"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": [
      {"id": "q1", "question": "q", "answers": []}]}]}]}
  path = tmp_path / "squad.json.gz"
  with gzip.open(path, "wt", encoding="utf-8") as f:
    json.dump(squad, f)
  with pytest.raises(InputError, match=r"squad\.json\.gz \[T, paragraph 0, question q1\], "
                                       r"field 'answers': empty answer list"):
    qa.read_squad(path)


def test_bad_tsv_rows(tmp_path):
  path = write(tmp_path, "trec.tsv", "1\tfactoid\tWhat?\tanswer\n2\tfactoid\tWhy?\n")
  with pytest.raises(InputError, match=r"trec\.tsv, line 2: expected 4 tab-separated columns"):
    qa.read_curated_trec(path)
  path = write(tmp_path, "trec.tsv", "1\tfactoid\tWhat?\t(unclosed\n")
  with pytest.raises(InputError, match=r"line 1, field 'answer': invalid regular expression"):
    qa.read_curated_trec(path)
  path = write(tmp_path, "trivia.txt", "Who?\t['a', __import__('os')]\n")
  with pytest.raises(InputError, match=r"line 1, field 'answers': answers are not a Python "
                                       r"literal list"):
    qa.read_triviaqa_dpr(path)


def test_non_existent_path_and_bad_spec(tmp_path):
  with pytest.raises(InputError, match=r"absent\.jsonl: no such file"):
    qa.load_qa_dataset(f"nq_open:{tmp_path}/absent.jsonl")
  with pytest.raises(InputError, match="expected FORMAT:PATH"):
    qa.load_qa_dataset("natural_questions:/x")


def test_corpus_reader_errors(tmp_path):
  path = write(tmp_path, "corpus.jsonl", '{"_id": "1", "title": "T", "text": "t"}\n{"_id": "2"}\n')
  with pytest.raises(InputError, match=r"corpus\.jsonl, line 2, field 'text': missing field"):
    list(load_documents(f"beir:{path}"))


def test_question_order_is_seeded_epochs_of_permutations():
  steps = [question_indices(10, 4, seed=3, step=step) for step in range(5)]  # 20 = 2 epochs
  order = np.concatenate(steps)
  assert sorted(order[:10]) == list(range(10)) and sorted(order[10:]) == list(range(10))
  assert not np.array_equal(order[:10], order[10:])  # each epoch has its own order
  np.testing.assert_array_equal(question_indices(10, 4, seed=3, step=3), steps[3])
  assert not np.array_equal(question_indices(10, 4, seed=4, step=0), steps[0])


def test_every_nth_spreads_at_most_n_examples():
  assert every_nth(list(range(10)), 3) == [0, 3, 6]
  assert every_nth(list(range(10)), 20) == list(range(10))
  assert every_nth(list(range(10)), 0) == []

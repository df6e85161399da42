"""Question-answering datasets in their published formats, read into one `QAExample` type.

A dataset is named by a spec string `FORMAT:PATH`, e.g. `nq_open:/data/NQ-open.dev.jsonl`, so that
flags and configs can name any supported set the same way; `tfds:NAME@SPLIT` reads a split of
tensorflow-datasets prepared locally (`tfds_input`).
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import re
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.data import files, tfds_input

AnswerKind = Literal["text", "regex"]


@dataclasses.dataclass(frozen=True)
class QAExample:
  """A question with its reference answers.

  `kind` is "text" for answer strings compared after SQuAD normalisation, and "regex" for
  CuratedTREC's patterns (a match anywhere in the text counts). `gold_document_id` names the
  paragraph the question was written from, where the dataset has one (SQuAD).
  """
  question: str
  answers: tuple[str, ...]
  kind: AnswerKind = "text"
  qid: str = ""
  gold_document_id: str | None = None


def every_nth(examples: list[QAExample], most: int) -> list[QAExample]:
  """At most `most` examples spread evenly over `examples` (every n-th, from the first)."""
  return examples[::max(1, len(examples) // most)][:most] if most > 0 else []


def question_indices(num_questions: int, batch_size: int, *, seed: int, step: int) -> np.ndarray:
  """[batch_size] questions of step `step`: epochs of seeded permutations, read in order, so that
  the batches are a pure function of (seed, step)."""
  positions = step * batch_size + np.arange(batch_size)
  epochs, offsets = np.divmod(positions, num_questions)
  return np.array([np.random.default_rng([seed, int(epoch)]).permutation(num_questions)[offset]
                   for epoch, offset in zip(epochs, offsets)])


def squad_paragraph_id(article_title: str, paragraph_index: int) -> str:
  """The document id of a SQuAD paragraph, shared by the QA reader and the corpus reader."""
  return f"{article_title}/{paragraph_index}"


def read_nq_open(path) -> list[QAExample]:
  """Natural Questions open (and EfficientQA): JSONL `{"question": str, "answer": [str]}`."""
  return [
      QAExample(
          question=files.required_string(record, "question", path=path, line=line),
          answers=files.required_string_list(record, "answer", path=path, line=line),
          qid=str(line),
      )
      for line, record in files.read_jsonl(path)
  ]


def read_webquestions(path) -> list[QAExample]:
  """WebQuestions: a JSON list of `{"qId", "qText", "answers": [str]}`."""
  records = files.read_json(path)
  if not isinstance(records, list):
    raise InputError(f"expected a JSON list of questions, got {type(records).__name__}", path=path)
  examples = []
  for index, record in enumerate(records):
    # A JSON list has no line numbers we can recover cheaply; the record index locates the entry.
    where = dict(path=f"{path} [record {index}]", line=None)
    if not isinstance(record, dict):
      raise InputError(f"expected a JSON object, got {type(record).__name__}", **where)
    examples.append(QAExample(
        question=files.required_string(record, "qText", **where),
        answers=files.required_string_list(record, "answers", **where),
        qid=files.required_string(record, "qId", **where),
    ))
  return examples


def read_curated_trec(path) -> list[QAExample]:
  """CuratedTREC (ORQA/DPR split): TSV `id, type, question, answer-regex`."""
  examples = []
  for line, text in files.read_lines(path):
    if not text.strip():
      continue
    # The pattern is the last column and may itself hold an escaped tab (train line 701).
    row = text.rstrip("\r\n").split("\t", maxsplit=3)
    if len(row) != 4:
      raise InputError(f"expected 4 tab-separated columns (id, type, question, answer), "
                       f"got {len(row)}", path=path, line=line)
    qid, _, question, pattern = row
    if not question.strip():
      raise InputError("empty string", path=path, line=line, field="question")
    if not pattern.strip():
      raise InputError("empty answer pattern", path=path, line=line, field="answer")
    try:
      re.compile(pattern)
    except re.error as e:
      raise InputError(f"invalid regular expression {pattern!r}: {e}",
                       path=path, line=line, field="answer") from e
    examples.append(QAExample(question=question, answers=(pattern,), kind="regex", qid=qid))
  return examples


def read_triviaqa_dpr(path) -> list[QAExample]:
  """TriviaQA open in DPR's format: TSV `question \\t ['answer', ...]`.

  The answer column is a Python literal list, CSV-quoted where it contains quotes; it is parsed
  with `ast.literal_eval`, which evaluates literals only.
  """
  examples = []
  rows = csv.reader((text for _, text in files.read_lines(path)), delimiter="\t")
  for row in rows:
    line = rows.line_num  # the row's last line (a quoted field may span several)
    if not row:
      continue
    if len(row) != 2:
      raise InputError(f"expected 2 tab-separated columns (question, answers), got {len(row)}",
                       path=path, line=line)
    question, answer_literal = row
    if not question.strip():
      raise InputError("empty string", path=path, line=line, field="question")
    try:
      answers = ast.literal_eval(answer_literal)
    except (ValueError, SyntaxError) as e:
      raise InputError(f"answers are not a Python literal list: {answer_literal[:80]!r}",
                       path=path, line=line, field="answers") from e
    examples.append(QAExample(
        question=question,
        answers=files.check_string_list(answers, "answers", path=path, line=line),
        qid=str(line),
    ))
  return examples


def read_squad(path) -> list[QAExample]:
  """SQuAD v1.1 JSON; each question keeps its paragraph as `gold_document_id`."""
  dataset = files.read_json(path)
  if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
    raise InputError("expected a SQuAD object with a 'data' list", path=path, field="data")
  examples = []
  for article_index, article in enumerate(dataset["data"]):
    for paragraph_index, paragraph, where in squad_paragraphs(article, article_index, path):
      title = article["title"]
      for qa in files.required_list(paragraph, "qas", **where):
        qid = qa.get("id", "?") if isinstance(qa, dict) else "?"
        question_where = dict(path=f"{path} [{title}, paragraph {paragraph_index}, question "
                                   f"{qid}]", line=None)
        answers = [files.required_string(answer, "text", **question_where)
                   for answer in files.required_list(qa, "answers", **question_where)]
        if not answers:
          raise InputError("empty answer list", field="answers", **question_where)
        examples.append(QAExample(
            question=files.required_string(qa, "question", **question_where),
            answers=tuple(dict.fromkeys(answers)),  # annotators often repeat an answer
            qid=files.required_string(qa, "id", **question_where),
            gold_document_id=squad_paragraph_id(title, paragraph_index),
        ))
  return examples


def squad_paragraphs(article: Any, article_index: int, path
                     ) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
  """(index, paragraph, its location for errors) of each paragraph of a SQuAD article, once the
  article's `title` and `paragraphs` and each paragraph's type are known to be right."""
  where = dict(path=f"{path} [article {article_index}]", line=None)
  title = files.required_string(article, "title", **where) if isinstance(article, dict) else ""
  where = dict(path=f"{path} [{title or f'article {article_index}'}]", line=None)
  located = []
  for index, paragraph in enumerate(files.required_list(article, "paragraphs", **where)):
    paragraph_where = dict(path=f"{path} [{title}, paragraph {index}]", line=None)
    if not isinstance(paragraph, dict):
      raise InputError(f"expected a JSON object, got {type(paragraph).__name__}",
                       **paragraph_where)
    located.append((index, paragraph, paragraph_where))
  return located


def split_squad_by_article(dataset: dict[str, Any], test_fraction: float,
                          seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
  """(train, test) SQuAD datasets of whole articles; a seeded `test_fraction` of the articles
  (at least one, and at least one left for training) is the test set."""
  articles = dataset.get("data") if isinstance(dataset, dict) else None
  if not isinstance(articles, list) or len(articles) < 2:
    raise InputError("expected a SQuAD object with a 'data' list of at least two articles",
                     field="data")
  num_test = min(max(1, round(len(articles) * test_fraction)), len(articles) - 1)
  test = set(np.random.default_rng(seed).permutation(len(articles))[:num_test].tolist())
  pick = lambda held_out: dict(dataset, data=[article for index, article in enumerate(articles)
                                              if (index in test) == held_out])
  return pick(False), pick(True)


def read_tfds_qa(spec: str) -> list[QAExample]:
  """A QA split of tensorflow-datasets (`DATASET[/CONFIG][:VERSION]@SPLIT`, see `tfds_input`):
  `question` with answers from `answer` or `answers` (a list of strings, as in
  `natural_questions_open` and `web_questions`) or `answer.aliases` (`trivia_qa`, the answer set
  of ORQA's and DPR's TriviaQA). Ids are `question_id` or `id` where present, else the index."""
  examples = []
  for index, record in tfds_input.read_records(spec):
    where = dict(path=f"tfds:{spec} [example {index}]", line=None)
    answers = record.get("answer", record.get("answers"))
    field = "answer" if "answer" in record else "answers"
    if isinstance(answers, dict):
      answers, field = answers.get("aliases"), f"{field}.aliases"
    if answers is None:
      raise InputError("missing field: expected answer, answers or answer.aliases",
                       field="answer", **where)
    qid = record.get("question_id", record.get("id", index))
    examples.append(QAExample(
        question=files.required_string(record, "question", **where),
        answers=tuple(dict.fromkeys(files.check_string_list(answers, field, **where))),
        qid=str(qid)))
  return examples


QA_READERS: dict[str, Callable[[str], list[QAExample]]] = {
    "nq_open": read_nq_open,
    "webquestions": read_webquestions,
    "curatedtrec": read_curated_trec,
    "triviaqa": read_triviaqa_dpr,
    "squad": read_squad,
    "tfds": read_tfds_qa,
}


def split_spec(spec: str, known_formats) -> tuple[str, str]:
  """Splits `FORMAT:PATH` into its parts, checking FORMAT against `known_formats`."""
  data_format, colon, path = spec.partition(":")
  if not colon or not path or data_format not in known_formats:
    raise InputError(f"expected FORMAT:PATH with FORMAT one of {sorted(known_formats)}, "
                     f"got {spec!r}")
  return data_format, path


def load_qa_dataset(spec: str) -> list[QAExample]:
  """Reads a QA dataset named `FORMAT:PATH`, e.g. `curatedtrec:/data/large2180-test.tsv`."""
  data_format, path = split_spec(spec, QA_READERS)
  examples = QA_READERS[data_format](path)
  if not examples:
    raise InputError("holds no questions", path=spec)
  return examples


@dataclasses.dataclass(frozen=True)
class QAEvaluation:
  """A held-out QA set on which retrieval recall@k (and a reader's exact match) is measured."""
  qa_dataset: str = setting(
      "", "Held-out questions as FORMAT:PATH (nq_open, webquestions, curatedtrec, triviaqa, "
      "squad, or tfds:NAME@SPLIT) on which answer recall@k (and a reader's exact match) is "
      "measured; empty: none.", flag="eval_qa_dataset")
  questions: int = setting(
      0, "Most --eval_qa_dataset questions evaluated, every n-th from the first; 0: all.",
      flag="eval_questions")
  recall_ks: tuple[int, ...] = setting((1, 5, 20), "Cut-offs of recall@k.",
                                       flag="eval_recall_ks")

  def examples(self) -> list[QAExample]:
    """The evaluated questions (none without a dataset)."""
    if not self.qa_dataset:
      return []
    examples = load_qa_dataset(self.qa_dataset)
    return every_nth(examples, self.questions) if self.questions else examples

  @property
  def sorted_ks(self) -> tuple[int, ...]:
    return tuple(sorted(self.recall_ks))

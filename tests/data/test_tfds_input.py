"""The tfds: input path: tiny TFDS datasets are built in a temporary directory (ArrayRecord, no
TensorFlow, no network) and read back through the QA and corpus readers."""

import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from orqa_realm.data import tfds_input  # noqa: E402
from orqa_realm.data.documents import load_documents  # noqa: E402
from orqa_realm.data.qa import load_qa_dataset  # noqa: E402
from orqa_realm.core.errors import InputError  # noqa: E402

_TEXT = tfds.features.Text()
_TEXTS = tfds.features.Sequence(tfds.features.Text())


class _LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder of `RECORDS` under `FEATURES`, with train and test splits of them."""
  VERSION = tfds.core.Version("1.0.0")
  FEATURES: dict = {}
  RECORDS: list = []

  def _info(self):
    return tfds.core.DatasetInfo(builder=self,
                                 features=tfds.features.FeaturesDict(self.FEATURES))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded
    return {"train": self._generate_examples(self.RECORDS),
            "test": self._generate_examples(self.RECORDS[:1])}

  def _generate_examples(self, records):
    yield from enumerate(records)


class OpenQuestions(_LocalBuilder):
  """Shaped like natural_questions_open: question, answer list."""
  FEATURES = {"question": _TEXT, "answer": _TEXTS}
  RECORDS = [{"question": "who wrote hamlet?", "answer": ["Shakespeare", "William Shakespeare"]},
             {"question": "where is the eiffel tower?", "answer": ["Paris", "Paris"]},
             {"question": "when did the war end?", "answer": ["1945"]}]


class TriviaQuestions(_LocalBuilder):
  """Shaped like trivia_qa: question_id, question, answer.aliases and answer.value."""
  FEATURES = {"question_id": _TEXT, "question": _TEXT,
              "answer": tfds.features.FeaturesDict({"aliases": _TEXTS, "value": _TEXT})}
  RECORDS = [{"question_id": "tc_1", "question": "Which planet is largest?",
              "answer": {"aliases": ["Jupiter", "Planet Jupiter"], "value": "Jupiter"}}]


class WikiPages(_LocalBuilder):
  """Shaped like wikipedia: id, title, text."""
  FEATURES = {"id": _TEXT, "title": _TEXT, "text": _TEXT}
  RECORDS = [{"id": "12", "title": "Anarchism", "text": "Anarchism is a political philosophy."},
             {"id": "25", "title": "Autism", "text": "Autism is a neurodevelopmental condition."}]


class EmptyAnswers(_LocalBuilder):
  FEATURES = {"question": _TEXT, "answers": _TEXTS}
  RECORDS = [{"question": "fine?", "answers": ["yes"]}, {"question": "broken?", "answers": []}]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("tfds")
  for builder in (OpenQuestions, TriviaQuestions, WikiPages, EmptyAnswers):
    builder(data_dir=str(directory), file_format="array_record").download_and_prepare()
  return str(directory)


@pytest.fixture(autouse=True)
def tfds_data_dir(data_dir, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", data_dir)


def test_qa_split_reads_questions_and_answers():
  examples = load_qa_dataset("tfds:open_questions@train")
  assert [example.question for example in examples] == [
      "who wrote hamlet?", "where is the eiffel tower?", "when did the war end?"]
  assert examples[0].answers == ("Shakespeare", "William Shakespeare")
  assert examples[1].answers == ("Paris",)  # repeated answers are kept once
  assert [example.qid for example in examples] == ["0", "1", "2"]
  assert len(load_qa_dataset("tfds:open_questions:1.0.0@test")) == 1
  assert len(load_qa_dataset("tfds:open_questions@train[1:]")) == 2  # TFDS slicing


def test_trivia_qa_answers_are_the_aliases():
  [example] = load_qa_dataset("tfds:trivia_questions@train")
  assert example.answers == ("Jupiter", "Planet Jupiter") and example.qid == "tc_1"


def test_corpus_split_reads_documents():
  documents = list(load_documents("tfds:wiki_pages@train"))
  assert [(d.doc_id, d.title) for d in documents] == [("12", "Anarchism"), ("25", "Autism")]
  assert documents[1].text == "Autism is a neurodevelopmental condition."


def test_bad_input_names_the_split_example_and_field(data_dir):
  with pytest.raises(InputError, match=r"empty_answers@train \[example 1\].*'answers'.*empty"):
    load_qa_dataset("tfds:empty_answers@train")
  with pytest.raises(InputError, match="not prepared|no TFDS dataset"):
    load_qa_dataset("tfds:never_built@train")
  with pytest.raises(InputError, match="DATASET.*@SPLIT"):
    load_qa_dataset("tfds:open_questions")
  with pytest.raises(InputError, match="missing field.*|field 'question'"):
    load_qa_dataset("tfds:wiki_pages@train")


def test_data_dir_argument_overrides_the_environment(data_dir, monkeypatch, tmp_path):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  with pytest.raises(InputError):
    list(tfds_input.read_records("open_questions@train"))
  assert len(list(tfds_input.read_records("open_questions@train", directory=data_dir))) == 3

"""Raw documents for a retrieval corpus, read from JSONL, BEIR or SQuAD files.

A corpus is named by a spec string `FORMAT:PATH`: `jsonl:` for `{"title", "text"}` lines (an
`_id` or `id` field is kept when present), `beir:` for a BEIR corpus.jsonl(.gz), `squad:` for
the paragraphs of a SQuAD JSON file (one document per paragraph), and `tfds:NAME@SPLIT` for a
split of tensorflow-datasets prepared locally (`tfds_input`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from orqa_realm.data import files, tfds_input
from orqa_realm.data.qa import split_spec, squad_paragraph_id, squad_paragraphs
from orqa_realm.core.errors import InputError


@dataclasses.dataclass(frozen=True)
class Document:
  """One source document; blocks never span two documents."""
  doc_id: str
  title: str
  text: str


def read_jsonl_documents(path) -> Iterator[Document]:
  """JSONL `{"text": str, "title": str?, "_id" | "id": str?}`; ids default to the line number."""
  for line, record in files.read_jsonl(path):
    text = files.required_string(record, "text", path=path, line=line, allow_empty=True)
    title = record.get("title", "")
    if not isinstance(title, str):
      raise InputError(f"expected a string, got {type(title).__name__}",
                       path=path, line=line, field="title")
    doc_id = record.get("_id", record.get("id", str(line)))
    if not isinstance(doc_id, (str, int)) or str(doc_id) == "":
      raise InputError(f"expected a non-empty string or integer id, got {doc_id!r}",
                       path=path, line=line, field="_id" if "_id" in record else "id")
    yield Document(doc_id=str(doc_id), title=title, text=text)


def read_squad_documents(path) -> Iterator[Document]:
  """One document per SQuAD paragraph, titled with its article ("Super_Bowl_50" -> "Super Bowl 50")."""
  dataset = files.read_json(path)
  if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
    raise InputError("expected a SQuAD object with a 'data' list", path=path, field="data")
  for article_index, article in enumerate(dataset["data"]):
    for paragraph_index, paragraph, where in squad_paragraphs(article, article_index, path):
      title = article["title"]
      context = files.required_string(paragraph, "context", **where)
      yield Document(doc_id=squad_paragraph_id(title, paragraph_index),
                     title=title.replace("_", " "), text=context)


def read_tfds_documents(spec: str) -> Iterator[Document]:
  """The documents of a tensorflow-datasets split (`DATASET[/CONFIG][:VERSION]@SPLIT`, e.g.
  `wikipedia/20230601.en@train`): `text`, with `title` and `id` where present (ids default to
  the index)."""
  for index, record in tfds_input.read_records(spec):
    where = dict(path=f"tfds:{spec} [example {index}]", line=None)
    text = files.required_string(record, "text", allow_empty=True, **where)
    title = record.get("title", "")
    if not isinstance(title, str):
      raise InputError(f"expected a string, got {type(title).__name__}", field="title", **where)
    yield Document(doc_id=str(record.get("id", index)), title=title, text=text)


CORPUS_READERS: dict[str, Callable[[str], Iterator[Document]]] = {
    "jsonl": read_jsonl_documents,
    "beir": read_jsonl_documents,
    "squad": read_squad_documents,
    "tfds": read_tfds_documents,
}


def load_documents(spec: str) -> Iterator[Document]:
  """Reads the documents of a corpus named `FORMAT:PATH`."""
  data_format, path = split_spec(spec, CORPUS_READERS)
  return CORPUS_READERS[data_format](path)

"""`preprocess` on bad corpora and bad output directories: each a one-line error naming the file
(and line or field), nothing written, nothing of the user's deleted."""

import gzip
import json

import pytest

from tests.bad_input.cli import assert_refused, run_command

GOOD = '{"title": "Warsaw", "text": "Warsaw is the capital of Poland."}\n'


def preprocess(corpus, output_dir, *extra):
  return run_command("preprocess", f"--corpus={corpus}", f"--output_dir={output_dir}", *extra)


@pytest.mark.parametrize("content, expected", [
    ("", "no blocks: the corpus has 0 documents"),
    ('{"title": "a", "text": ""}\n{"title": "b", "text": "  "}\n',
     "no blocks: the corpus has 2 documents, none with text"),
], ids=["no_documents", "no_text"])
def test_an_empty_corpus_is_refused(tmp_path, content, expected):
  corpus = tmp_path / "corpus.jsonl"
  corpus.write_text(content)
  assert_refused(preprocess(f"jsonl:{corpus}", tmp_path / "store"), f"jsonl:{corpus}", expected)
  assert not (tmp_path / "store").exists()


def test_a_byte_that_is_not_utf8_is_located(tmp_path):
  corpus = tmp_path / "corpus.jsonl"
  corpus.write_bytes(GOOD.encode() + b'{"title": "b", "text": "caf\xe9"}\n')
  assert_refused(preprocess(f"jsonl:{corpus}", tmp_path / "store"),
                 f"{corpus}, line 2: not UTF-8: byte b'\\xe9'")


def test_a_truncated_gzip_is_located(tmp_path):
  corpus = tmp_path / "corpus.jsonl.gz"
  compressed = gzip.compress((GOOD * 5000).encode())
  corpus.write_bytes(compressed[:len(compressed) // 2])
  result = preprocess(f"jsonl:{corpus}", tmp_path / "store")
  assert_refused(result, f"{corpus}, line ", "damaged or truncated gzip stream")
  assert not (tmp_path / "store").exists()


def test_a_squad_paragraph_without_context_names_the_article_and_paragraph(tmp_path):
  squad = tmp_path / "squad.json"
  squad.write_text(json.dumps({"data": [{"title": "Oxygen", "paragraphs": [
      {"context": "Oxygen is an element.", "qas": []}, {"qas": []}]}]}))
  assert_refused(preprocess(f"squad:{squad}", tmp_path / "store"),
                 f"{squad} [Oxygen, paragraph 1], field 'context': missing field")


def test_overwrite_replaces_a_block_store_but_never_another_directory(tmp_path):
  corpus = tmp_path / "corpus.jsonl"
  corpus.write_text(GOOD)
  notes = tmp_path / "notes"
  notes.mkdir()
  (notes / "todo.txt").write_text("keep me")
  assert_refused(preprocess(f"jsonl:{corpus}", notes, "--overwrite"),
                 f"{notes}: holds files this project did not write (no manifest.json of format "
                 "'orqa_realm.block_store'): refusing to replace it")
  assert (notes / "todo.txt").read_text() == "keep me"
  assert_refused(preprocess(f"jsonl:{corpus}", notes / "todo.txt", "--overwrite"),
                 "is a file, not a directory")
  # A store is replaced.
  store = tmp_path / "store"
  assert preprocess(f"jsonl:{corpus}", store).returncode == 0
  replaced = preprocess(f"jsonl:{corpus}", store, "--overwrite")
  assert replaced.returncode == 0, replaced.stderr[-3000:]


def test_an_unwritable_output_directory_is_named_before_the_work(tmp_path):
  corpus = tmp_path / "corpus.jsonl"
  corpus.write_text(GOOD)
  (tmp_path / "file").write_text("")
  assert_refused(preprocess(f"jsonl:{corpus}", tmp_path / "file" / "store"),
                 f"{tmp_path / 'file'}: cannot write here: a file, not a directory")

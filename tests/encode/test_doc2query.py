"""doc2query with a tiny random decoder: expansions written beside a store, resumed after an
interruption to the same result, refused when settings differ; BM25 indexing them."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys

import pytest

from orqa_realm.core.errors import InputError
from orqa_realm.data import expansions as expansions_lib
from orqa_realm.data.blocks import build_block_store
from orqa_realm.data.documents import load_documents
from orqa_realm.encode import doc2query
from orqa_realm.index import bm25
from tests.conftest import DEMO_SQUAD, REPO_ROOT, subprocess_env


@pytest.fixture(scope="module")
def small_store(tokenizer, tmp_path_factory):
  """Seven paragraphs of the bundled SQuAD slice as a block store."""
  spec = f"squad:{DEMO_SQUAD}"
  return build_block_store(itertools.islice(load_documents(spec), 7), tokenizer,
                           tmp_path_factory.mktemp("stores") / "seven", source=spec)


@pytest.fixture(scope="module")
def config(tiny_decoder_dir):
  return doc2query.ExpansionConfig(
      decoder=tiny_decoder_dir, expansion_name="tiny", questions_per_block=2, max_new_tokens=6,
      temperature=1.0, top_p=0.95, batch_blocks=3, max_passage_tokens=48)


@pytest.fixture(scope="module")
def generator(config):
  return doc2query.QuestionGenerator(config)


@pytest.fixture(scope="module")
def complete(small_store, config, generator, monkeypatch_module):
  monkeypatch_module.setattr(doc2query, "QuestionGenerator", lambda _: generator)
  return doc2query.expand_store(small_store, config)


@pytest.fixture(scope="module")
def monkeypatch_module():
  with pytest.MonkeyPatch.context() as patch:
    yield patch


def test_every_block_gets_its_questions(small_store, complete):
  assert len(complete) == len(small_store) == 7
  counts = [len(complete.questions(block)) for block in range(len(small_store))]
  assert all(1 <= count <= 2 for count in counts) and sum(counts) >= 10
  manifest = complete.manifest
  assert manifest["complete"] and manifest["store_fingerprint"] == small_store.fingerprint
  assert manifest["generator"]["settings"]["questions_per_block"] == 2
  # Three chunks of 3, 3 and 1 blocks.
  directory = expansions_lib.expansion_directory(small_store, "tiny")
  assert sorted(path.name for path in directory.glob("chunk_*.json")) == [
      f"chunk_00000{i}.json" for i in range(3)]
  assert json.loads((directory / "chunk_000002.json").read_text())[0] == complete.questions(6)


def test_interrupted_run_resumes_to_the_same_questions(small_store, config, generator,
                                                       complete, tmp_path, monkeypatch):
  """A run stopped after its first chunk (a half-written chunk left behind, as a kill inside
  the write leaves it), run again, writes only the other chunks, and ends with the questions of
  the uninterrupted run."""
  monkeypatch.setattr(doc2query, "QuestionGenerator", lambda _: generator)
  other = dataclasses.replace(config, expansion_name="interrupted")
  writes = []
  original_write = expansions_lib.ExpansionWriter.write

  def write_then_stop(writer, chunk, questions):
    if writes:
      (writer.directory / f".chunk_{chunk:06d}.json.partial").write_text("[[\"half")
      raise KeyboardInterrupt
    writes.append(chunk)
    original_write(writer, chunk, questions)

  monkeypatch.setattr(expansions_lib.ExpansionWriter, "write", write_then_stop)
  with pytest.raises(KeyboardInterrupt):
    doc2query.expand_store(small_store, other)
  with pytest.raises(InputError, match="incomplete expansions"):
    expansions_lib.Expansions(small_store, "interrupted")
  monkeypatch.setattr(expansions_lib.ExpansionWriter, "write", original_write)
  generated = []
  monkeypatch.setattr(generator, "questions", _recording(generator.questions, generated))
  resumed = doc2query.expand_store(small_store, other)
  assert len(generated) == 2  # chunks 1 and 2 only
  assert [resumed.questions(block) for block in range(7)] == [
      complete.questions(block) for block in range(7)]
  assert resumed.fingerprint == complete.fingerprint


def _recording(function, calls):
  def recorded(*args, **kwargs):
    calls.append(args)
    return function(*args, **kwargs)
  return recorded


def test_other_settings_under_the_same_name_refused(small_store, config, generator, complete,
                                                    monkeypatch):
  monkeypatch.setattr(doc2query, "QuestionGenerator", lambda _: generator)
  monkeypatch.setattr(generator, "config", dataclasses.replace(config, temperature=0.5))
  with pytest.raises(InputError, match="generator.settings.temperature: saved 1.0, now 0.5"
                     ) as error:
    doc2query.expand_store(small_store, dataclasses.replace(config, temperature=0.5))
  assert "expansions/tiny/manifest.json" in str(error.value)


def test_bm25_indexes_the_questions(small_store, complete, tmp_path):
  """With the expansions, a block is found by words only its questions hold; the saved index
  is refused once the expansions are generated again."""
  plain = bm25.BM25Searcher.build(small_store)
  expanded_settings = bm25.BM25Settings(expansions="tiny")
  expanded = bm25.BM25Searcher.build(small_store, expanded_settings)
  question = next(q for block in range(7) for q in complete.questions(block)
                  if plain.tokenize([q])[0])
  block = next(b for b in range(7) if question in complete.questions(b))
  assert bm25.block_text(small_store, block, complete).endswith(
      "\n".join(complete.questions(block)))
  scores_with = expanded.search_texts([question], k=7)
  assert block in scores_with.ids[0].tolist() and scores_with.scores[0].max() > 0
  directory = str(tmp_path / "bm25")
  expanded.save(directory, small_store)
  assert bm25.BM25Searcher.load(directory, small_store,
                                expanded_settings).expansions_fingerprint == complete.fingerprint
  manifest_path = expansions_lib.expansion_directory(small_store, "tiny") / "manifest.json"
  manifest = json.loads(manifest_path.read_text())
  try:
    manifest_path.write_text(json.dumps(dict(manifest, fingerprint="0" * 16)))
    with pytest.raises(InputError, match="generated again since"):
      bm25.BM25Searcher.load(directory, small_store, expanded_settings)
  finally:
    manifest_path.write_text(json.dumps(manifest))


def test_expand_command(small_store, config, complete):
  """The command line: flags bound to the config, and a complete run only reports."""
  result = subprocess.run(
      [sys.executable, "-m", "orqa_realm.expand", f"--block_store={small_store.directory}",
       f"--decoder={config.decoder}", "--expansion_name=tiny", "--questions_per_block=2",
       "--max_new_tokens=6", "--temperature=1.0", "--top_p=0.95", "--batch_blocks=3",
       "--max_passage_tokens=48"],
      capture_output=True, text=True, env=subprocess_env(), cwd=REPO_ROOT, timeout=300)
  assert result.returncode == 0, result.stderr
  assert '"num_blocks": 7' in result.stdout and complete.fingerprint in result.stdout
  refused = subprocess.run(
      [sys.executable, "-m", "orqa_realm.expand", f"--block_store={small_store.directory}",
       f"--decoder={config.decoder}", "--expansion_name=tiny", "--temperature=0"],
      capture_output=True, text=True, env=subprocess_env(), cwd=REPO_ROOT, timeout=300)
  assert refused.returncode != 0 and "gives one question a block" in refused.stderr

"""Runs, metrics, block stores, indexes and BM25 indexes on a `gs://` path: every file goes through
etils.epath, here backed by an in-memory filesystem registered for the gs protocol (no network),
and a bucket URI is never turned into a local path."""

import importlib
import json
import os

import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from orqa_realm.core import paths, run_directory
from orqa_realm.data.blocks import BlockStore, build_block_store
from orqa_realm.data.documents import Document
from orqa_realm.index.bm25 import BM25Config, BM25Searcher, open_or_build
from orqa_realm.index.handle import open_index
from orqa_realm.index.storage import IndexRoot, load_embeddings
from orqa_realm.training.metrics_log import MetricsLog, read_metric

DOCUMENTS = [Document(f"d{i}", f"Title {i}", f"Sentence one of {i}. Another sentence, {i}.")
             for i in range(6)]


class InMemoryGCS(MemoryFileSystem):
  """fsspec's memory filesystem answering to gs:// (epath asks fsspec for "gcs")."""
  protocol = ("gs", "gcs")
  root_marker = ""


@pytest.fixture
def bucket(monkeypatch):
  """A fresh in-memory gs:// filesystem for the test; fsspec's registry is restored after."""
  # pylint: disable-next=protected-access
  registry = importlib.import_module("fsspec.registry")._registry
  for protocol in ("gs", "gcs"):
    monkeypatch.setitem(registry, protocol, InMemoryGCS)
  InMemoryGCS.store.clear()
  InMemoryGCS.pseudo_dirs.clear()
  yield "gs://bucket"
  InMemoryGCS.store.clear()
  InMemoryGCS.pseudo_dirs.clear()


def in_bucket(prefix: str) -> list[str]:
  return sorted(key for key in InMemoryGCS.store if key.startswith(prefix))


def test_a_uri_is_never_mangled(tmp_path, monkeypatch):
  assert str(paths.resolve("gs://bucket/run")) == "gs://bucket/run"
  assert run_directory.checkpoint_dir("gs://bucket/run") == "gs://bucket/run/checkpoints"
  monkeypatch.chdir(tmp_path)
  assert run_directory.checkpoint_dir("runs/x") == os.path.join(tmp_path, "runs/x/checkpoints")


def test_a_run_description_and_metrics_live_in_the_bucket(bucket):
  workdir = f"{bucket}/runs/ict"
  run_directory.start_run(workdir, task="ict", model={"retriever": {"pooling": "mean"}},
                          settings={"train": {"batch_size": 8}}, flags_text="--task=ict\n")
  description = run_directory.read_run(workdir)
  assert (description.task, description.model) == ("ict", {"retriever": {"pooling": "mean"}})
  assert json.loads(paths.resolve(f"{workdir}/run.json").read_text())["settings"] == {
      "train": {"batch_size": 8}}
  log = MetricsLog(workdir, resumed_step=0)
  log.write(1, {"loss": 2.0})
  log.write(2, {"loss": 1.5})
  log.close()
  steps, values = read_metric(f"{workdir}/metrics.jsonl", "loss")
  assert steps.tolist() == [1, 2] and values.tolist() == [2.0, 1.5]
  assert any("/tensorboard/" in key for key in in_bucket(f"{workdir}/"))
  # A resume from step 1 drops what was logged after it.
  MetricsLog(workdir, resumed_step=1).close()
  assert read_metric(f"{workdir}/metrics.jsonl", "loss")[0].tolist() == [1]
  assert not os.path.exists("gs:")  # nothing was written to a local "gs:" directory


def test_a_block_store_index_and_bm25_index_in_the_bucket(bucket, tokenizer, tmp_path):
  local = build_block_store(DOCUMENTS, tokenizer, tmp_path / "store")
  remote = build_block_store(DOCUMENTS, tokenizer, f"{bucket}/blocks")
  assert remote.directory == f"{bucket}/blocks"
  assert not in_bucket(f"{bucket}/blocks.partial")  # written, then renamed into place
  again = BlockStore(f"{bucket}/blocks")
  assert again.fingerprint == local.fingerprint and len(again) == len(local)
  assert [again.text(b) for b in range(len(again))] == [local.text(b) for b in range(len(local))]
  np.testing.assert_array_equal(again.encode(range(len(again))).token_ids,
                                local.encode(range(len(local))).token_ids)

  root = IndexRoot(f"{bucket}/index", keep=1)
  assert root.root == f"{bucket}/index"
  embeddings = np.random.default_rng(0).normal(size=(len(again), 8)).astype(np.float32)
  for step in (1, 2):
    root.publish(embeddings * step, store_fingerprint=again.fingerprint, checkpoint_step=step,
                 storage_dtype="int8" if step == 2 else "float32")
  assert root.versions() == [2] and root.latest_version() == 2
  loaded = open_index(root.latest(), again)
  np.testing.assert_allclose(loaded.embeddings, 2 * embeddings,
                             atol=0.02 * np.abs(embeddings).max())
  np.testing.assert_allclose(load_embeddings(root.latest()), loaded.embeddings)

  bm25_dir = f"{bucket}/bm25"
  built = open_or_build(again, BM25Config(directory=bm25_dir))
  assert in_bucket(f"{bm25_dir}/")
  reloaded = open_or_build(again, BM25Config(directory=bm25_dir))
  questions = ["sentence one of 3", "title 5"]
  np.testing.assert_array_equal(reloaded.search_texts(questions, 3).ids,
                                built.search_texts(questions, 3).ids)
  np.testing.assert_array_equal(built.search_texts(questions, 3).ids,
                                BM25Searcher.build(local).search_texts(questions, 3).ids)

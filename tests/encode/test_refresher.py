"""The asynchronous refresher and the trainer's index handle, on short real ICT runs."""

import functools
import json
import os
import shutil
import threading
import time

import numpy as np
import orbax.checkpoint as ocp

from orqa_realm.core import run_directory
from orqa_realm.encode import embedding, runs
from orqa_realm.encode.embedding import EmbedSettings, IndexConfig
from orqa_realm.encode.refresher import Refresher, RefresherThread
from orqa_realm.index.handle import IndexHandle
from orqa_realm.index.storage import IndexRoot, load_embeddings
from orqa_realm.modeling import retriever
from orqa_realm.training import loop
from tests.index.hold_batch import HoldBatchUntilVersion
from tests.tasks.tiny_ict import tiny_ict_task

BLOCK_LENGTH = 48


def options(workdir, **overrides):
  values = dict(workdir=str(workdir), num_train_steps=6, batch_size=8, learning_rate=1e-3,
                warmup_steps=1, checkpoint_every_steps=2, log_every_steps=1)
  values.update(overrides)
  return loop.TrainConfig(**values)


def refresher_settings(task, workdir, index_dir) -> dict:
  return dict(workdir=str(workdir), store=task.store,
              config=task.config.retriever,
              # Every version kept: the tests read early ones back after a run, however many
              # checkpoints a loaded machine let the refresher index meanwhile.
              index=IndexConfig(index_dir=str(index_dir), keep_versions=100,
                                embedding=EmbedSettings(embed_batch_size=32,
                                                        embed_dtype="float32")))


def make_refresher(task, workdir, index_dir, **overrides):
  return Refresher(**refresher_settings(task, workdir, index_dir), **overrides)


class GatedRefresher(Refresher):
  """Holds every refresh until the test opens the gate, and says when one is waiting."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.waiting, self.gate = threading.Event(), threading.Event()

  def refresh(self, step):
    self.waiting.set()
    assert self.gate.wait(timeout=300)
    return super().refresh(step)


def embeddings_of_checkpoint(task, workdir, step):
  """Independently of the refresher: a plain orbax restore of the whole checkpoint, and the
  block tower applied to every block padded to the full length in one batch."""
  restored = ocp.StandardCheckpointer().restore(
      os.path.join(run_directory.checkpoint_dir(str(workdir)), str(step), "default"))
  model = retriever.DualEncoder(task.config.retriever)
  inputs = task.store.encode(range(len(task.store)), BLOCK_LENGTH)
  return np.asarray(model.apply({"params": restored["params"]}, inputs,
                                method=retriever.DualEncoder.embed_blocks))


def test_training_never_waits_and_the_index_is_its_checkpoints_embeddings(
    squad_block_store, tiny_bert_dir, tmp_path):
  task = tiny_ict_task(squad_block_store.directory, tiny_bert_dir)
  refresher = GatedRefresher(**refresher_settings(task, tmp_path / "run", tmp_path / "index"))
  thread = RefresherThread(refresher, poll_seconds=60).start()
  # Woken by checkpoint commits alone: the 60 s poll would outlast the whole run.
  # Keeps every checkpoint: the held refresh must still find its own after training.
  loop.train(task, options(tmp_path / "run", keep_checkpoints=10),
             on_checkpoint_commit=thread.notify)
  # Training finished all its steps while a refresh was held: it never waited for one.
  assert refresher.waiting.is_set() and not refresher.gate.is_set()
  refresher.gate.set()
  thread.close()
  version = IndexRoot(str(tmp_path / "index")).latest()
  assert version is not None and version.checkpoint_step in (1, 2, 4, 6)
  np.testing.assert_allclose(load_embeddings(version),
                             embeddings_of_checkpoint(task, tmp_path / "run", version.checkpoint_step),
                             atol=1e-5, rtol=1e-5)


def test_the_trainer_switches_to_a_new_version_and_logs_its_staleness(
    squad_block_store, tiny_bert_dir, tmp_path):
  task = tiny_ict_task(squad_block_store.directory, tiny_bert_dir)
  handle = IndexHandle(IndexRoot(str(tmp_path / "index")), task.store, poll_seconds=60)
  refresher = make_refresher(task, tmp_path / "run", tmp_path / "index",
                             on_publish=lambda version: handle.notify())
  thread = RefresherThread(refresher, poll_seconds=60).start()
  loop.train(HoldBatchUntilVersion(task, handle, step=3), options(tmp_path / "run"),
             on_checkpoint_commit=thread.notify, index_handle=handle)
  thread.close()
  handle.close()
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    logged = [json.loads(line) for line in f]
  with_index = [entry for entry in logged if "index_version" in entry]
  # The trainer takes the newest version at the start of a step: the batch of step 3 waited
  # for it, so step 4 (logged as 5 completed) is the first to see it.
  assert with_index and with_index[0]["step"] == 5
  first = with_index[0]
  assert first["index_version"] == 1
  built_from = IndexRoot(str(tmp_path / "index")).read(1).checkpoint_step
  assert built_from in (1, 2)
  assert first["index_staleness_steps"] == 5 - built_from


def test_a_failed_refresh_keeps_the_previous_version(squad_block_store, tiny_bert_dir, tmp_path):
  task = tiny_ict_task(squad_block_store.directory, tiny_bert_dir)
  loop.train(task, options(tmp_path / "run", num_train_steps=4, async_checkpoints=False))
  index_root = IndexRoot(str(tmp_path / "index"))
  refresher = make_refresher(task, tmp_path / "run", tmp_path / "index")
  refresher.refresh(2)
  handle = IndexHandle(index_root, task.store, poll_seconds=60)
  assert handle.wait_for_version(timeout=60).version.version == 1
  # Checkpoint 4 loses its arrays: its refresh must fail without touching the published index.
  arrays = os.path.join(run_directory.checkpoint_dir(str(tmp_path / "run")), "4", "default")
  shutil.move(arrays, tmp_path / "arrays_of_4")
  stop, wake = threading.Event(), threading.Event()
  runner = threading.Thread(target=refresher.run, args=(stop, wake, 0.05))
  runner.start()
  deadline = time.time() + 60
  while refresher.failures == 0 and time.time() < deadline:
    time.sleep(0.05)
  assert refresher.failures >= 1 and refresher.last_indexed_step == 2
  assert index_root.latest_version() == 1 and index_root.versions() == [1]
  handle.notify()
  assert handle.current().version.checkpoint_step == 2
  # Tried again after each poll: once the checkpoint restores (here, its arrays are back; in a
  # run, the step saved again after a resuming trainer moved the broken one aside), it is
  # indexed.
  shutil.move(tmp_path / "arrays_of_4", arrays)
  deadline = time.time() + 120
  while index_root.latest_version() == 1 and time.time() < deadline:
    time.sleep(0.05)
  stop.set()
  runner.join()
  assert index_root.latest().checkpoint_step == 4 and refresher.last_indexed_step == 4
  handle.close()


def test_a_version_that_fails_to_load_is_skipped_by_the_handle(squad_block_store, tmp_path):
  root = IndexRoot(str(tmp_path))
  rows = len(squad_block_store)
  root.publish(np.ones((rows, 4), np.float32), store_fingerprint=squad_block_store.fingerprint,
               checkpoint_step=1)
  handle = IndexHandle(root, squad_block_store, poll_seconds=0.05)
  assert handle.wait_for_version(timeout=60).version.version == 1
  root.publish(np.ones((rows, 4), np.float32), store_fingerprint="another store",
               checkpoint_step=2)
  deadline = time.time() + 60
  while handle.last_error is None and time.time() < deadline:
    time.sleep(0.05)
  assert "block_store" in str(handle.last_error)
  assert handle.current().version.version == 1
  handle.close()


def test_the_trainers_handle_skips_versions_another_run_embedded(squad_block_store, tmp_path):
  run_directory.start_run(tmp_path / "run", task="ict", model={}, settings={})
  this_run = runs.run_identity(str(tmp_path / "run"))
  root = IndexRoot(str(tmp_path / "index"))
  rows = len(squad_block_store)

  def publish(run_identity):
    root.publish(np.ones((rows, 4), np.float32), store_fingerprint=squad_block_store.fingerprint,
                 checkpoint_step=1, metadata={embedding.INDEXED_RUN: run_identity})

  publish(dict(workdir=str(tmp_path / "other"), run_id="another"))
  handle = IndexHandle(root, squad_block_store, poll_seconds=0.05,
                       check_version=functools.partial(runs.check_embedded_by_run_in,
                                                       workdir=str(tmp_path / "run")))
  deadline = time.time() + 60
  while handle.last_error is None and time.time() < deadline:
    time.sleep(0.05)
  assert "not from the run being trained" in str(handle.last_error)
  assert "id another" in str(handle.last_error) and handle.current() is None
  publish(this_run)
  assert handle.wait_for_version(timeout=60).version.version == 2
  handle.close()


def test_the_refresher_starts_from_its_own_runs_newest_version(squad_block_store, tiny_bert_dir,
                                                              tmp_path):
  """A version of another run in the root does not count as indexed: checkpoint 0 of a fresh
  run must still be indexed (the trainer waits for it)."""
  task = tiny_ict_task(squad_block_store.directory, tiny_bert_dir)
  root = IndexRoot(str(tmp_path / "index"))
  rows = len(squad_block_store)

  def publish(step, run_identity):
    root.publish(np.ones((rows, 4), np.float32), store_fingerprint=squad_block_store.fingerprint,
                 checkpoint_step=step, metadata={embedding.INDEXED_RUN: run_identity})

  publish(5, dict(workdir=str(tmp_path / "other"), run_id="another"))
  assert make_refresher(task, tmp_path / "run", tmp_path / "index").last_indexed_step == -1
  run_directory.start_run(tmp_path / "run", task="ict", model={}, settings={})
  publish(3, runs.run_identity(str(tmp_path / "run")))
  assert make_refresher(task, tmp_path / "run", tmp_path / "index").last_indexed_step == 3

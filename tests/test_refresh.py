"""`python -m orqa_realm.refresh`, as a user runs it beside a training run: the retriever and the
block store come from the run's run.json, the newest checkpoint is indexed, SIGTERM stops it, and
a refresher killed mid-publish loses nothing."""

import json
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from orqa_realm.encode import embedding, refresher, runs
from orqa_realm.encode.embedding import EmbedSettings, IndexConfig
from orqa_realm.encode.refresher import RefresherThread
from orqa_realm.index.handle import IndexHandle
from orqa_realm.index.storage import IndexRoot
from orqa_realm.training import loop
from tests.conftest import REPO_ROOT, subprocess_env
from tests.tasks.tiny_dpr import tiny_ance_task
from tests.tasks.tiny_ict import TINY_RETRIEVER


def stop_after_the_first_version(process: subprocess.Popen, root: IndexRoot) -> str:
  """Waits (300 s at most) for the refresh `process` to publish into `root`, stops it with
  SIGTERM, checks it exited cleanly and returns its stdout."""
  deadline = time.monotonic() + 300
  while root.latest_version() is None:
    assert process.poll() is None, process.communicate()[1][-3000:]
    assert time.monotonic() < deadline, "no version published in 300 s"
    time.sleep(0.2)
  process.send_signal(signal.SIGTERM)
  stdout, stderr = process.communicate(timeout=120)
  assert process.returncode == 0, stderr[-3000:]
  return stdout


def test_refresh_indexes_the_runs_newest_checkpoint_and_stops_on_sigterm(
    squad_block_store, tiny_ict_run, tmp_path):
  index_dir = tmp_path / "index"
  process = subprocess.Popen(
      [sys.executable, "-m", "orqa_realm.refresh", f"--workdir={tiny_ict_run}",
       f"--index_dir={index_dir}", "--embed_dtype=float32", "--refresh_poll_seconds=0.2"],
      cwd=REPO_ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)
  root = IndexRoot(str(index_dir))
  stdout = stop_after_the_first_version(process, root)
  assert "published index version 1 from checkpoint 2" in stdout
  version = root.latest()
  assert version.checkpoint_step == 2 and version.num_rows == len(squad_block_store)
  assert embedding.indexed_retriever(version) == TINY_RETRIEVER


def stray_files(root: IndexRoot) -> list[str]:
  """What a killed publisher leaves: partial versions, and pointers under temporary names."""
  return sorted([child.name for child in pathlib.Path(root.root, "versions").iterdir()
                 if child.name.startswith(".")] +
                [child.name for child in pathlib.Path(root.root).iterdir()
                 if child.name.startswith(".LATEST")])


def kill_refresh_mid_publish(workdir, index_dir, kill_at: str) -> None:
  """Runs the refresher over `workdir` until it is killed (SIGKILL) at `kill_at` of its publish
  (tests/encode/refresh_killed_mid_publish.py)."""
  killed = subprocess.run(
      [sys.executable, "-m", "tests.encode.refresh_killed_mid_publish", f"--kill_at={kill_at}",
       f"--workdir={workdir}", f"--index_dir={index_dir}", "--embed_dtype=float32",
       "--refresh_poll_seconds=0.2"],
      cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]


@pytest.mark.slow
def test_a_refresher_killed_mid_publish_loses_nothing(squad_block_store, tiny_bert_dir, tmp_path):
  """ANCE trains on a refreshed index while its refresher process is killed twice mid-publish
  (embeddings written, then the new pointer written but not renamed): each time the published
  version stays the newest complete one, the trainer goes on training on it, and the next
  refresh cleans up and publishes the newest checkpoint."""
  task = tiny_ance_task(squad_block_store.directory, tiny_bert_dir)
  workdir = tmp_path / "run"
  index = IndexConfig(index_dir=str(tmp_path / "index"),
                      embedding=EmbedSettings(embed_batch_size=64, embed_dtype="float32"))
  root = index.root()
  handle = IndexHandle(root, task.store, poll_seconds=0.2)
  config = lambda steps: loop.TrainConfig(
      workdir=str(workdir), num_train_steps=steps, batch_size=8, learning_rate=1e-3,
      warmup_steps=1, checkpoint_every_steps=1, log_every_steps=1, async_checkpoints=False)
  try:
    # The initial model indexed by the refresher thread, as `train --refresh_index` starts.
    thread = RefresherThread(refresher.refresher_for_run(
        runs.retriever_run_of(str(workdir), task.name, task.run_model()), task.store, index,
        on_publish=lambda version: handle.notify()), poll_seconds=60).start()
    loop.train(task, config(1), on_checkpoint_commit=thread.notify, index_handle=handle)
    thread.close()
    for steps, kill_at in ((2, "embeddings"), (4, "pointer")):
      loop.train(task, config(steps), index_handle=handle)  # a checkpoint to index
      published = root.latest_version()
      kill_refresh_mid_publish(workdir, root.root, kill_at)
      assert root.latest_version() == published and stray_files(root)
      # The trainer goes on, on the version published before the kill.
      loop.train(task, config(steps + 1), index_handle=handle)
      assert logged_index_versions(workdir)[steps + 1] == published
    # The next refresh cleans up and publishes the newest checkpoint.
    process = subprocess.Popen(
        [sys.executable, "-m", "orqa_realm.refresh", f"--workdir={workdir}",
         f"--index_dir={root.root}", "--embed_dtype=float32", "--refresh_poll_seconds=0.2"],
        cwd=REPO_ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    deadline = time.monotonic() + 300
    while root.latest_version() == published:
      assert process.poll() is None, process.communicate()[1][-3000:]
      assert time.monotonic() < deadline, "no version published in 300 s"
      time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    assert root.latest().checkpoint_step == 5 and stray_files(root) == []
    deadline = time.monotonic() + 60
    while handle.current().version.version != root.latest_version():
      assert time.monotonic() < deadline, "the trainer's handle did not take the new version"
      time.sleep(0.2)
  finally:
    handle.close()


def logged_index_versions(workdir) -> dict[int, int]:
  with open(pathlib.Path(workdir) / "metrics.jsonl", encoding="utf-8") as f:
    return {record["step"]: int(record["index_version"]) for record in map(json.loads, f)
            if "index_version" in record}


@pytest.mark.slow
def test_multi_vector_runs_are_refreshed_as_multi_vector_indexes(
    squad_block_store, tiny_bert_dir, tiny_colbert_run, small_squad, tmp_path):
  """`refresh` beside a ColBERT run and `train --task=colbert --refresh_index` both publish
  multi-vector versions, compressed as asked; a dense index setting is refused for them."""
  index_dir = tmp_path / "index"
  refresh = lambda *flags: subprocess.Popen(
      [sys.executable, "-m", "orqa_realm.refresh", f"--workdir={tiny_colbert_run}",
       f"--index_dir={index_dir}", "--embed_dtype=float32", "--refresh_poll_seconds=0.2",
       *flags], cwd=REPO_ROOT, env=subprocess_env(), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  refused = refresh("--index_storage_dtype=int8")
  assert refused.wait(timeout=300) != 0
  assert ("--index_storage_dtype is not read by `refresh of a multi-vector run`"
          in refused.communicate()[1])
  process = refresh("--colbert_nbits=1", "--colbert_centroids=64")
  root = IndexRoot(str(index_dir))
  stop_after_the_first_version(process, root)
  version = root.latest()
  assert version.kind == "multi_vector" and version.checkpoint_step == 6
  assert version.storage_dtype == "residual_1bit" and version.details["num_centroids"] == 64
  # The trainer's own refresher thread.
  trained = subprocess.run(
      [sys.executable, "-m", "orqa_realm.train", "--task=colbert",
       f"--workdir={tmp_path / 'run'}", f"--block_store={squad_block_store.directory}",
       f"--bert={tiny_bert_dir}", "--from_scratch", "--colbert_dim=16", "--query_length=12",
       "--block_length=48", f"--train_qa_dataset={small_squad}", "--hard_negative_depth=20",
       f"--bm25_dir={tmp_path / 'bm25'}", "--batch_size=8", "--num_train_steps=2",
       "--checkpoint_every_steps=2", "--dtype=float32", "--refresh_index",
       f"--index_dir={tmp_path / 'trained_index'}", "--colbert_nbits=0",
       "--embed_dtype=float32", "--refresh_poll_seconds=0.2"],
      cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
  assert trained.returncode == 0, trained.stderr[-3000:]
  versions = IndexRoot(str(tmp_path / "trained_index"))
  assert versions.latest() is not None and versions.latest().kind == "multi_vector"
  assert versions.latest().storage_dtype == "float16"

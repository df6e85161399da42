"""The refresher tests' way of making a refresh land mid-run deterministically: a task wrapper
whose batch of one step is made only once the index handle has loaded a wanted version, and a
short training run through it for the tasks that mine the refreshed index (ANCE, REALM)."""

import json
import time

from orqa_realm.encode.embedding import EmbedSettings, IndexConfig
from orqa_realm.encode.refresher import Refresher, RefresherThread
from orqa_realm.index.handle import IndexHandle
from orqa_realm.index.storage import IndexRoot
from orqa_realm.training import loop


class HoldBatchUntilVersion:
  """`task`, except that its batch of `step` waits (up to 300 s) until `handle` has loaded
  version `version` or a newer one. The loop takes the index before making the batch, so the
  next step is the first to train on that version."""

  def __init__(self, task, handle, *, step: int, version: int = 1):
    self._task, self._handle, self._step, self._version = task, handle, step, version

  def __getattr__(self, name):
    return getattr(self._task, name)

  def train_batch(self, step, context):
    if step == self._step:
      deadline = time.monotonic() + 300
      self._handle.wait_for_version(timeout=300)
      while self._handle.current().version.version < self._version:
        assert time.monotonic() < deadline, f"no index version {self._version} in 300 s"
        time.sleep(0.1)
    return self._task.train_batch(step, context)


def train_through_a_refresh(task, directory) -> tuple[IndexRoot, list[dict]]:
  """Trains `task` (one that needs the index) 6 steps of 8 with the refresher as a thread, the
  batch of step 5 (index 4) held until index version 2 exists; returns the index root (every
  version kept) and the logged metrics of the steps that saw an index."""
  workdir = directory / "run"
  index = IndexConfig(index_dir=str(directory / "index"), keep_versions=100,
                      embedding=EmbedSettings(embed_batch_size=64, embed_dtype="float32"))
  root = index.root()
  handle = IndexHandle(root, task.store, poll_seconds=60)
  refresher = Refresher(workdir=str(workdir), store=task.store, config=task.config.retriever, index=index,
                        on_publish=lambda version: handle.notify())
  thread = RefresherThread(refresher, poll_seconds=60).start()
  config = loop.TrainConfig(workdir=str(workdir), num_train_steps=6, batch_size=8,
                            learning_rate=1e-3, warmup_steps=1, checkpoint_every_steps=2,
                            log_every_steps=1)
  try:
    loop.train(HoldBatchUntilVersion(task, handle, step=4, version=2), config,
               on_checkpoint_commit=thread.notify, index_handle=handle)
  finally:
    thread.close()
    handle.close()
  with open(workdir / "metrics.jsonl") as f:
    return root, [json.loads(line) for line in f if "index_version" in line]


def assert_switched_with_staleness(root: IndexRoot, logged: list[dict]) -> None:
  """The initial model was indexed before step 0; every step logged its version and staleness;
  version 2 (from checkpoint 2, saved after step 2 is logged) was switched to by step 6 at the
  latest, since the batch of step 5 waited for it."""
  assert root.read(1).checkpoint_step == 0
  assert [entry["step"] for entry in logged] == [1, 2, 3, 4, 5, 6]
  versions = [entry["index_version"] for entry in logged]
  assert versions[:2] == [1, 1] and versions[-1] >= 2 and versions == sorted(versions)
  for entry in logged:
    built_from = root.read(int(entry["index_version"])).checkpoint_step
    assert entry["index_staleness_steps"] == entry["step"] - built_from

"""One process of a multi-process run on CPU (tests/training/test_multihost.py starts them):

    python -m tests.training.multihost_check MODE PROCESS_ID NUM_PROCESSES PORT OUT STORE BERT

Each process has the simulated devices XLA_FLAGS gives it; with NUM_PROCESSES > 1 they join
through `jax.distributed` on localhost (gloo collectives). MODE:
- ict: 3 steps of tiny ICT through the loop; the first process writes the logged losses and the
  final parameters to OUT/ict.npz.
- ance: 3 steps of tiny ANCE over a pre-published index version 1; while building step 1's
  batch the first process publishes version 2 and loads it at once, while the others only look
  for new versions every minute. Every process writes the version each step used to
  OUT/ance_PROCESS_ID.json.
"""

import json
import os
import sys
import time

import jax
import numpy as np

from orqa_realm.core import parallel


class RecordIndexVersions:
  """`task`, recording the index version of each step; on the first process it also publishes
  a new version while building the batch of `publish_step`, and loads it into its own handle."""

  def __init__(self, task, handle, root, publish_step: int):
    self._task, self._handle, self._root = task, handle, root
    self._publish_step = publish_step
    self.versions: list[int] = []

  def __getattr__(self, name):
    return getattr(self._task, name)

  def train_batch(self, step, context):
    self.versions.append(context.index.version.version)
    if step == self._publish_step and jax.process_index() == 0:
      publish_random_version(self._root, self._task.store, seed=2)
      self._handle.notify()
      deadline = time.monotonic() + 120
      while self._handle.current().version.version < 2:
        assert time.monotonic() < deadline, "version 2 was not loaded in 120 s"
        time.sleep(0.05)
    return self._task.train_batch(step, context)


def publish_random_version(root, store, seed: int) -> None:
  embeddings = np.random.default_rng(seed).normal(size=(len(store), 16)).astype(np.float32)
  root.publish(embeddings, store_fingerprint=store.fingerprint, checkpoint_step=seed)


def train_config(workdir: str):
  from orqa_realm.training import loop

  return loop.TrainConfig(workdir=workdir, num_train_steps=3, batch_size=8, learning_rate=1e-3,
                          warmup_steps=1, log_every_steps=1, checkpoint_every_steps=100,
                          async_checkpoints=False)


def run_ict(out: str, store: str, bert: str) -> None:
  from orqa_realm.training import loop
  from tests.tasks.tiny_ict import tiny_ict_task

  workdir = os.path.join(out, "ict_run")
  loop.train(tiny_ict_task(store, bert), train_config(workdir))
  # Started again: every process restores the final checkpoint (agreeing that it restores), and
  # the parameters compared are the restored ones.
  state = loop.train(tiny_ict_task(store, bert), train_config(workdir))
  params = [parallel.fetch_replicated(leaf) for leaf in jax.tree.leaves(state.params)]
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
      losses = [record["loss"] for record in map(json.loads, f) if "loss" in record]
    np.savez(os.path.join(out, "ict.npz"), losses=np.asarray(losses), *params)


def run_ance(out: str, store: str, bert: str) -> None:
  from orqa_realm.index.handle import IndexHandle
  from orqa_realm.index.storage import IndexRoot
  from orqa_realm.training import loop
  from tests.tasks.tiny_dpr import tiny_ance_task

  task = tiny_ance_task(store, bert, negative_depth=10)
  root = IndexRoot(os.path.join(out, "index"), keep=10)
  handle = IndexHandle(root, task.store, poll_seconds=60)
  recorder = RecordIndexVersions(task, handle, root, publish_step=1)
  try:
    loop.train(recorder, train_config(os.path.join(out, "ance_run")), index_handle=handle)
  finally:
    handle.close()
  with open(os.path.join(out, f"ance_{jax.process_index()}.json"), "w", encoding="utf-8") as f:
    json.dump(recorder.versions, f)


def main(mode, process_id, num_processes, port, out, store, bert):
  if int(num_processes) > 1:
    parallel.initialize_multihost(f"127.0.0.1:{port}", int(num_processes), int(process_id))
  {"ict": run_ict, "ance": run_ance}[mode](out, store, bert)


if __name__ == "__main__":
  main(*sys.argv[1:])

"""The asynchronous index refresher: new checkpoint -> block tower -> embeddings -> new version.

Dense retrievers publish embeddings (`Refresher`), multi-vector ones (ColBERT, ME-BERT, the
poly-encoder) their blocks' vectors (`MultiVectorRefresher`); the rest is the same.

It runs beside training, as a thread of the trainer (`RefresherThread`, woken when a checkpoint
is committed) or as its own process or host (`python -m orqa_realm.refresh`, which re-reads the
checkpoint directory every `poll_seconds`), so that on a pod it can use other devices than the
trainer's. Training never waits for it: the trainer only ever takes the newest version already
loaded (`IndexHandle`). It always indexes the newest checkpoint, skipping ones that arrived while
it was busy. A failed refresh is logged and the previous version stays published.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import jax
from absl import logging

from orqa_realm.core import checkpoints, parallel, run_directory
from orqa_realm.core.config import setting
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.tokenization import Tokenizer
from orqa_realm.encode import embedding, runs
from orqa_realm.encode import multi_vector as multi_vector_encode
from orqa_realm.index.storage import IndexVersion
from orqa_realm.modeling.multi_vector import MultiVectorConfig
from orqa_realm.modeling.retriever import RetrieverConfig


@dataclasses.dataclass(frozen=True)
class RefresherConfig:
  """How often the refresher looks for new checkpoints."""
  poll_seconds: float = setting(
      10.0, "How often the refresher and the trainer's index handle re-read the checkpoint "
      "directory and the index pointer when nothing woke them.", flag="refresh_poll_seconds")


class Refresher:
  """Builds and publishes index versions from a run's checkpoints.

  Args:
    workdir: the run whose checkpoints are indexed.
    store: the block store to embed.
    config: the run's retriever (its block tower embeds, at its block length).
    index: where and how versions are published.
    mesh: the devices that embed (default: this host's: the refresher runs on one host, and a
      computation over other hosts' devices would need them to join it).
    on_publish: called with each published version (e.g. `IndexHandle.notify`).
  """

  def __init__(self, *, workdir: str, store: BlockStore, config: RetrieverConfig,
               index: embedding.IndexConfig, mesh=None,
               on_publish: Callable[[IndexVersion], None] | None = None):
    self.workdir = workdir
    self.reader = checkpoints.CheckpointReader(run_directory.checkpoint_dir(workdir))
    self.store = store
    self.config = config
    self.index = index
    self.index_root = index.root()
    # Refused now rather than at the first refresh, on a thread whose errors are only logged.
    self.check_publishable()
    self.mesh = mesh if mesh is not None else parallel.make_mesh(jax.local_devices())
    self.on_publish = on_publish
    self.failures = 0
    self._failed_step: int | None = None
    # Only this run's own versions say which of its checkpoints are indexed: one of another
    # run in the same root must not stop checkpoint 0 of a fresh run from being indexed.
    latest = self.index_root.latest()
    self.last_indexed_step = (latest.checkpoint_step if latest is not None
                              and runs.is_embedded_by_run_in(latest, workdir) else -1)

  def check_publishable(self) -> None:
    """Refuses an index root this refresher could not publish into."""
    embedding.check_publishable(self.index_root, self.config, self.store)

  def publish_checkpoint(self, step: int) -> IndexVersion:
    """Embeds the store with checkpoint `step` and publishes it."""
    params = runs.restore_retriever(self.reader, step, self.config, self.mesh, tower="block")
    # The run's description exists once it has a checkpoint (a fresh run writes it first).
    return embedding.embed_and_publish(self.store, params, self.config, self.index,
                                       checkpoint_step=step,
                                       run=runs.run_identity(self.workdir), mesh=self.mesh)

  def refresh(self, step: int) -> IndexVersion:
    """Indexes checkpoint `step` and publishes it as the newest version."""
    started = time.time()
    if step not in self.reader.all_steps():
      raise FileNotFoundError(
          f"checkpoint {step} of {self.reader.directory} was deleted before it could be indexed "
          "(the trainer keeps --keep_checkpoints); the newest one will be indexed instead")
    version = self.publish_checkpoint(step)
    self.last_indexed_step = max(self.last_indexed_step, step)
    logging.info("published index version %d from checkpoint %d in %.1fs", version.version,
                 step, time.time() - started)
    if self.on_publish is not None:
      self.on_publish(version)
    return version

  def run(self, stop: threading.Event, wake: threading.Event, poll_seconds: float) -> None:
    """Indexes new checkpoints until `stop` is set; sleeps on `wake` between looks."""
    while not stop.is_set():
      # Cleared before looking, so that a wake-up during a refresh is not lost.
      wake.clear()
      step = self.reader.latest_step()
      if step is not None and step > self.last_indexed_step:
        try:
          self.refresh(step)
          continue
        # Any failure keeps the previous version published; training goes on.
        except Exception as e:  # pylint: disable=broad-exception-caught
          # Tried again after a poll: a checkpoint may fail while a resuming trainer moves it
          # aside, and the step is then saved again. The traceback is logged once per step.
          self.failures += 1
          if step != self._failed_step:
            logging.exception("index refresh from checkpoint %d failed; the previous index "
                              "version stays in use", step)
          else:
            logging.warning("index refresh from checkpoint %d failed again: %s", step, e)
          self._failed_step = step
      wake.wait(poll_seconds)

  def close(self) -> None:
    self.reader.close()


class MultiVectorRefresher(Refresher):
  """A refresher of a multi-vector run: each checkpoint's block vectors, published as a
  multi-vector version (compressed as `index.storage` says). `tokenizer` gives the special
  wordpieces of its inputs."""

  def __init__(self, *, tokenizer: Tokenizer, config: MultiVectorConfig,
               index: multi_vector_encode.MultiVectorIndexConfig, **kwargs):
    self.tokenizer = tokenizer
    super().__init__(config=config, index=index, **kwargs)

  def check_publishable(self) -> None:
    multi_vector_encode.check_publishable(self.index_root, self.config, self.store,
                                          self.index.storage)

  def publish_checkpoint(self, step: int) -> IndexVersion:
    params = runs.restore_multi_vector_params(self.reader, step, self.config, self.mesh)
    return multi_vector_encode.embed_and_publish(
        self.store, self.tokenizer, params, self.config, self.index, checkpoint_step=step,
        run=runs.run_identity(self.workdir), mesh=self.mesh)


class RefresherThread:
  """A `Refresher` on a background thread of the trainer, woken when a checkpoint commits."""

  def __init__(self, refresher: Refresher, *, poll_seconds: float = 10.0):
    self.refresher = refresher
    self._stop = threading.Event()
    self._wake = threading.Event()
    self._thread = threading.Thread(
        target=refresher.run, args=(self._stop, self._wake, poll_seconds), name="index-refresher",
        daemon=True)

  def start(self) -> RefresherThread:
    self._thread.start()
    return self

  def notify(self) -> None:
    """A checkpoint was committed: look now rather than at the next poll."""
    self._wake.set()

  def close(self) -> None:
    """Stops after the refresh in progress, if any."""
    self._stop.set()
    self._wake.set()
    self._thread.join()
    self.refresher.close()


def refresher_for_run(run: runs.RetrieverRun, store: BlockStore, index: embedding.IndexConfig, *,
                      mesh=None, on_publish: Callable[[IndexVersion], None] | None = None
                      ) -> Refresher:
  """A refresher of `run`'s checkpoints into `index`, embedding `store` (refused when it was
  tokenized with another vocabulary than the run's)."""
  runs.check_tokenizer(run, store.tokenizer_fingerprint, store.directory)
  return Refresher(workdir=run.workdir, store=store,
                   config=run.retriever, index=index, mesh=mesh, on_publish=on_publish)


def multi_vector_refresher_for_run(
    run: runs.MultiVectorRunInfo, store: BlockStore, tokenizer: Tokenizer,
    index: multi_vector_encode.MultiVectorIndexConfig, *, mesh=None,
    on_publish: Callable[[IndexVersion], None] | None = None) -> MultiVectorRefresher:
  """A refresher of the multi-vector `run`'s checkpoints into `index`, encoding `store` (refused
  when it was tokenized with another vocabulary than the run's)."""
  runs.check_tokenizer(run, store.tokenizer_fingerprint, store.directory)
  return MultiVectorRefresher(workdir=run.workdir, store=store, tokenizer=tokenizer,
                              config=run.config, index=index, mesh=mesh, on_publish=on_publish)

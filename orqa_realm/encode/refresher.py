"""The asynchronous index refresher: new checkpoint -> block tower -> embeddings -> new version.

It runs beside training, as a thread of the trainer (`RefresherThread`, woken when a checkpoint
is committed) or as its own process or host (`python -m orqa_realm.refresh`, which re-reads the
checkpoint directory every `poll_seconds`), so that on a pod it can use other devices than the
trainer's. Training never waits for it: the trainer only ever takes the newest version already
loaded (`IndexHandle`). It always indexes the newest checkpoint, skipping ones that arrived while
it was busy. A failed refresh is logged and the previous version stays published.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from absl import logging

from orqa_realm.core import checkpoints, parallel
from orqa_realm import embed
from orqa_realm.data.blocks import BlockStore
from orqa_realm.core.errors import InputError
from orqa_realm.index import index_flags
from orqa_realm.index.handle import IndexHandle
from orqa_realm.index.scann_index import ScannConfig
from orqa_realm.index.storage import IndexRoot, IndexVersion
from orqa_realm.modeling.retriever import RetrieverConfig
from orqa_realm.tasks import retriever_flags


class Refresher:
  """Builds and publishes index versions from a run's checkpoints.

  Args:
    checkpoint_dir: the run's checkpoint directory.
    store: the block store to embed.
    config: the run's retriever configuration.
    index_root: where versions are published.
    on_publish: called with each published version (e.g. `IndexHandle.notify`).
    Others: as `embed.embed_blocks` and `IndexRoot.publish`.
  """

  def __init__(self, *, checkpoint_dir: str, store: BlockStore, config: RetrieverConfig,
               index_root: IndexRoot, block_length: int, batch_size: int, dtype, mesh=None,
               storage_dtype: str = "float32", scann_config: ScannConfig | None = None,
               on_publish: Callable[[IndexVersion], None] | None = None):
    self.reader = checkpoints.CheckpointReader(checkpoint_dir)
    self.store = store
    self.config = config
    self.index_root = index_root
    self.block_length = block_length
    self.batch_size = batch_size
    self.dtype = dtype
    self.mesh = mesh if mesh is not None else parallel.make_mesh()
    self.storage_dtype = storage_dtype
    self.scann_config = scann_config
    self.on_publish = on_publish
    self.failures = 0
    latest = index_root.latest()
    self.last_indexed_step = (latest.checkpoint_step
                              if latest and latest.checkpoint_step is not None else -1)

  def refresh(self, step: int) -> IndexVersion:
    """Indexes checkpoint `step` and publishes it as the newest version."""
    started = time.time()
    if step not in self.reader.all_steps():
      raise FileNotFoundError(
          f"checkpoint {step} of {self.reader.directory} was deleted before it could be indexed "
          "(the trainer keeps --keep_checkpoints); the newest one will be indexed instead")
    params = embed.restore_retriever(self.reader, step, self.config, self.mesh,
                                     block_tower_only=True)
    version = embed.embed_and_publish(
        self.store, params, self.config, self.index_root, checkpoint_step=step,
        block_length=self.block_length, batch_size=self.batch_size, dtype=self.dtype,
        mesh=self.mesh, storage_dtype=self.storage_dtype, scann_config=self.scann_config)
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
        # Marked even if it fails: a broken checkpoint is not retried, the next one is.
        self.last_indexed_step = step
        try:
          self.refresh(step)
        except Exception:  # Any failure keeps the previous version published; training goes on.
          self.failures += 1
          logging.exception("index refresh from checkpoint %d failed; the previous index "
                            "version stays in use", step)
        continue
      wake.wait(poll_seconds)

  def close(self) -> None:
    self.reader.close()


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


def refresher_from_flags(workdir: str, model_config: dict, *, mesh=None,
                         on_publish: Callable[[IndexVersion], None] | None = None) -> Refresher:
  """A refresher for the run in `workdir`, configured by the retriever and index flags."""
  if not index_flags.INDEX_DIR.value or not retriever_flags.BLOCK_STORE.value:
    raise InputError("refreshing an index needs --index_dir and --block_store")
  return Refresher(
      checkpoint_dir=checkpoints.checkpoint_dir(workdir),
      store=BlockStore(retriever_flags.BLOCK_STORE.value),
      config=RetrieverConfig.from_dict(model_config),
      index_root=IndexRoot(index_flags.INDEX_DIR.value, keep=index_flags.INDEX_KEEP_VERSIONS.value),
      block_length=retriever_flags.BLOCK_LENGTH.value,
      batch_size=index_flags.EMBED_BATCH_SIZE.value, dtype=index_flags.embed_dtype(), mesh=mesh,
      storage_dtype=index_flags.INDEX_STORAGE_DTYPE.value,
      scann_config=index_flags.scann_config(), on_publish=on_publish)


def handle_from_flags(store: BlockStore | None = None, *, mesh=None,
                      poll_seconds: float = 10.0) -> IndexHandle:
  """An IndexHandle on --index_dir with --index_backend."""
  if not index_flags.INDEX_DIR.value:
    raise InputError("reading a refreshed index needs --index_dir")
  return IndexHandle(
      IndexRoot(index_flags.INDEX_DIR.value, keep=index_flags.INDEX_KEEP_VERSIONS.value),
      store, backend=index_flags.INDEX_BACKEND.value, mesh=mesh, poll_seconds=poll_seconds)

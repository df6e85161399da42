"""Opening a published index version as a searcher, and the trainer's handle on the newest one.

The handle loads new versions on a background thread and swaps them in only when the trainer
asks between steps (`current()`), which never blocks on loading. It wakes when the in-process
refresher publishes (`notify()`) and otherwise re-reads the LATEST pointer every `poll_seconds`
(a sleeping wait, never a busy loop), which also picks up versions published by a refresher
running in another process or on another host.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Callable

import jax
import numpy as np
from absl import logging
from etils import epath

from orqa_realm.core import parallel, paths
from orqa_realm.index.exact import DEFAULT_CHUNK_SIZE, ExactSearcher
from orqa_realm.index.scann_index import ScannSearcher
from orqa_realm.index.searcher import Searcher
from orqa_realm.index.storage import (SCANN_DIR, IndexRoot, IndexVersion, check_matches_store,
                                      load_embeddings)
from orqa_realm.core.errors import InputError


@dataclasses.dataclass(frozen=True)
class LoadedIndex:
  """A version ready to search."""
  version: IndexVersion
  searcher: Searcher
  embeddings: np.ndarray  # [num_rows, dim] float32 block embeddings


def open_index(version: IndexVersion, store=None, *, backend: str = "exact", mesh=None,
               exact_chunk_size: int = DEFAULT_CHUNK_SIZE) -> LoadedIndex:
  """Loads `version` for searching with `backend`, first checking it was built from `store`."""
  if store is not None:
    check_matches_store(version, store)
  embeddings = load_embeddings(version)
  if backend == "exact":
    searcher = ExactSearcher(embeddings, mesh=mesh, chunk_size=exact_chunk_size)
  elif backend == "scann":
    if version.scann_config is None:
      raise InputError("this version has no ScaNN index (it was published with the exact "
                       "backend); re-publish with --index_backend=scann",
                       path=version.directory)
    with paths.local_directory(epath.Path(version.directory) / SCANN_DIR) as scann_dir:
      searcher = ScannSearcher.load(scann_dir, version.scann_config, version.num_rows,
                                    version.embedding_size)
  else:
    raise ValueError(f"unknown index backend {backend!r}")
  return LoadedIndex(version, searcher, np.asarray(embeddings))


class IndexHandle:
  """The newest loadable version of an index root, swapped in between training steps.

  A version that fails to load (e.g. built from another block store) or that `check_version`
  refuses (e.g. embedded by another run) is logged and skipped: the previous one stays in use.
  Each host loads versions at its own pace, so an exact searcher spans this host's devices only
  (`mesh`, by default all of them): a search over every host's devices would need every host to
  load the version at the same moment.
  """

  def __init__(self, root: IndexRoot, store=None, *, backend: str = "exact", mesh=None,
               poll_seconds: float = 10.0,
               check_version: Callable[[IndexVersion], None] | None = None):
    self.root = root
    mesh = mesh if mesh is not None else parallel.make_mesh(jax.local_devices())

    def open_checked(version: IndexVersion) -> LoadedIndex:
      if check_version is not None:
        check_version(version)
      return open_index(version, store, backend=backend, mesh=mesh)

    self._open = open_checked
    self.poll_seconds = poll_seconds
    self._lock = threading.Lock()
    self._current: LoadedIndex | None = None
    self._ready: LoadedIndex | None = None  # loaded, waiting for the trainer to take it
    self._newest_seen = 0
    self.last_error: Exception | None = None
    self._wake = threading.Event()
    self._stop = threading.Event()
    self._loaded = threading.Condition(self._lock)
    self._thread = threading.Thread(target=self._watch, name="index-handle", daemon=True)
    self._thread.start()

  def notify(self) -> None:
    """Tells the handle a version was just published (wakes it without waiting for the poll)."""
    self._wake.set()

  def current(self) -> LoadedIndex | None:
    """The newest loaded version (None before the first); never waits for loading."""
    with self._lock:
      if self._ready is not None:
        self._current, self._ready = self._ready, None
      return self._current

  def take(self, version: int) -> LoadedIndex:
    """Version `version` (chosen by another host for this step), from now on the current one:
    the loaded one when it is that version, else loaded now (another host loaded it, so it is
    published)."""
    current = self.current()
    if current is not None and current.version.version == version:
      return current
    loaded = self._open(self.root.read(version))
    with self._lock:
      self._current = loaded
    return loaded

  def wait_for_version(self, timeout: float | None = None) -> LoadedIndex:
    """Blocks until some version is loaded (at the start of a run that needs one)."""
    with self._loaded:
      if not self._loaded.wait_for(lambda: self._ready or self._current, timeout):
        detail = f": {self.last_error}" if self.last_error else ""
        raise TimeoutError(f"no index version loaded from {self.root.root}{detail}")
    return self.current()

  def close(self) -> None:
    self._stop.set()
    self._wake.set()
    self._thread.join()

  def _watch(self) -> None:
    while not self._stop.is_set():
      # Cleared before looking, so that a notify() during a load is not lost.
      self._wake.clear()
      newest = self.root.latest_version()
      if newest is not None and newest > self._newest_seen:
        self._newest_seen = newest
        self._load(newest)
      self._wake.wait(self.poll_seconds)

  def _load(self, version: int) -> None:
    try:
      loaded = self._open(self.root.read(version))
    except Exception as e:  # Any failure keeps the old index; the run goes on.
      self.last_error = e
      logging.error("index version %d of %s could not be loaded; keeping the previous one: %s",
                    version, self.root.root, e)
      return
    with self._loaded:
      self._ready = loaded
      self._loaded.notify_all()

"""Versioned indexes on disk: each refresh publishes a complete new version, then moves a pointer.

    INDEX_ROOT/
      LATEST                 {"version": 12}: replaced by an atomic rename, never edited in place
      versions/000012/       manifest.json, embeddings.npy (+ embedding_scales.npy), scann/

A version is written under a temporary name and renamed when complete, and the pointer only ever
names complete versions, so a reader never sees a half-written index. One writer (the refresher)
per root; any number of readers. The manifest records the block store (fingerprint and size) the
embeddings were computed from and the checkpoint step, so loading against another store is an
error, not an out-of-range gather.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import uuid
from typing import Any, Literal

import ml_dtypes
import numpy as np

from orqa_realm.core.errors import InputError
from orqa_realm.index.scann_index import ScannConfig, ScannSearcher

FORMAT = "orqa_realm.index"
VERSION = 1
POINTER = "LATEST"
MANIFEST = "manifest.json"
EMBEDDINGS = "embeddings.npy"
SCALES = "embedding_scales.npy"
SCANN_DIR = "scann"

StorageDtype = Literal["float32", "bfloat16", "int8"]
STORAGE_DTYPES = ("float32", "bfloat16", "int8")


@dataclasses.dataclass(frozen=True)
class IndexVersion:
  """A published index version, as its manifest describes it."""
  directory: str
  version: int
  num_rows: int
  embedding_size: int
  store_fingerprint: str
  checkpoint_step: int | None
  storage_dtype: str
  scann_config: ScannConfig | None  # None when no ScaNN index was built
  metadata: dict[str, Any]

  @property
  def manifest_path(self) -> str:
    return os.path.join(self.directory, MANIFEST)


def save_embeddings(directory: str, embeddings: np.ndarray, storage_dtype: StorageDtype) -> None:
  """Writes [num_rows, dim] float32 embeddings, optionally as bfloat16 or int8.

  int8 uses one symmetric scale per row (max |value| / 127), kept in float32 beside the codes.
  """
  if storage_dtype == "float32":
    np.save(os.path.join(directory, EMBEDDINGS), embeddings.astype(np.float32))
  elif storage_dtype == "bfloat16":
    # .npy has no bfloat16: store the bit patterns as uint16.
    np.save(os.path.join(directory, EMBEDDINGS),
            embeddings.astype(ml_dtypes.bfloat16).view(np.uint16))
  elif storage_dtype == "int8":
    scales = np.maximum(np.abs(embeddings).max(axis=1), 1e-12) / 127.0  # [num_rows]
    codes = np.clip(np.round(embeddings / scales[:, None]), -127, 127).astype(np.int8)
    np.save(os.path.join(directory, EMBEDDINGS), codes)
    np.save(os.path.join(directory, SCALES), scales.astype(np.float32))
  else:
    raise ValueError(f"storage dtype {storage_dtype!r} is not one of {STORAGE_DTYPES}")


def load_embeddings(version: IndexVersion) -> np.ndarray:
  """The version's embeddings as float32 [num_rows, dim] (memory-mapped when stored as float32)."""
  path = os.path.join(version.directory, EMBEDDINGS)
  stored = np.load(path, mmap_mode="r")
  if stored.shape != (version.num_rows, version.embedding_size):
    raise InputError(f"holds embeddings of shape {stored.shape}, the manifest says "
                     f"({version.num_rows}, {version.embedding_size})", path=path)
  if version.storage_dtype == "float32":
    return stored
  if version.storage_dtype == "bfloat16":
    return np.asarray(stored).view(ml_dtypes.bfloat16).astype(np.float32)
  scales = np.load(os.path.join(version.directory, SCALES))
  return np.asarray(stored, np.float32) * scales[:, None]


def _read_manifest(directory: str) -> IndexVersion:
  path = os.path.join(directory, MANIFEST)
  try:
    with open(path, encoding="utf-8") as f:
      manifest = json.load(f)
  except FileNotFoundError as e:
    raise InputError("not an index version: no manifest", path=directory) from e
  except json.JSONDecodeError as e:
    raise InputError(f"malformed manifest: {e.msg}", path=path, line=e.lineno) from e
  if manifest.get("format") != FORMAT or manifest.get("format_version") != VERSION:
    raise InputError(f"expected format {FORMAT!r} version {VERSION}", path=path, field="format")
  scann = manifest.get("scann")
  return IndexVersion(
      directory=directory, version=manifest["version"], num_rows=manifest["num_rows"],
      embedding_size=manifest["embedding_size"],
      store_fingerprint=manifest["block_store"]["fingerprint"],
      checkpoint_step=manifest.get("checkpoint_step"), storage_dtype=manifest["storage_dtype"],
      scann_config=ScannConfig(**scann) if scann is not None else None,
      metadata=manifest.get("metadata", {}))


class IndexRoot:
  """The versions under one index root directory.

  Args:
    root: the directory (created on the first publish).
    keep: versions kept on disk; older ones are deleted after a publish (the newest is never).
  """

  def __init__(self, root: str, *, keep: int = 3):
    self.root = os.path.abspath(root)
    self.keep = max(keep, 1)
    self._versions_dir = os.path.join(self.root, "versions")

  def versions(self) -> list[int]:
    """Complete versions on disk, oldest first."""
    if not os.path.isdir(self._versions_dir):
      return []
    return sorted(int(name) for name in os.listdir(self._versions_dir) if name.isdigit())

  def version_dir(self, version: int) -> str:
    return os.path.join(self._versions_dir, f"{version:06d}")

  def latest_version(self) -> int | None:
    """The version the pointer names, or None before the first publish."""
    try:
      with open(os.path.join(self.root, POINTER), encoding="utf-8") as f:
        return json.load(f)["version"]
    except FileNotFoundError:
      return None

  def latest(self) -> IndexVersion | None:
    version = self.latest_version()
    return None if version is None else self.read(version)

  def read(self, version: int) -> IndexVersion:
    return _read_manifest(self.version_dir(version))

  def publish(self, embeddings: np.ndarray, *, store_fingerprint: str,
              checkpoint_step: int | None, storage_dtype: StorageDtype = "float32",
              scann_config: ScannConfig | None = None,
              metadata: dict[str, Any] | None = None) -> IndexVersion:
    """Writes a new version (embeddings, optional ScaNN index) and points LATEST at it."""
    embeddings = np.asarray(embeddings, np.float32)
    versions = self.versions()
    version = (versions[-1] if versions else 0) + 1
    os.makedirs(self._versions_dir, exist_ok=True)
    self._remove_abandoned_partials()
    partial = os.path.join(self._versions_dir, f".partial-{version:06d}-{uuid.uuid4().hex[:8]}")
    os.makedirs(partial)
    try:
      save_embeddings(partial, embeddings, storage_dtype)
      scann_manifest = None
      if scann_config is not None:
        searcher = ScannSearcher.build(embeddings, scann_config)
        searcher.save(os.path.join(partial, SCANN_DIR))
        scann_manifest = dataclasses.asdict(searcher.config)
      manifest = dict(
          format=FORMAT, format_version=VERSION, version=version, num_rows=len(embeddings),
          embedding_size=embeddings.shape[1], storage_dtype=storage_dtype,
          block_store=dict(fingerprint=store_fingerprint, num_blocks=len(embeddings)),
          checkpoint_step=checkpoint_step, scann=scann_manifest, created=time.time(),
          metadata=metadata or {})
      with open(os.path.join(partial, MANIFEST), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
      os.rename(partial, self.version_dir(version))
    except BaseException:
      shutil.rmtree(partial, ignore_errors=True)
      raise
    self._point_to(version)
    self._remove_old_versions()
    return self.read(version)

  def _point_to(self, version: int) -> None:
    temporary = os.path.join(self.root, f".{POINTER}.{uuid.uuid4().hex[:8]}")
    with open(temporary, "w", encoding="utf-8") as f:
      json.dump({"version": version}, f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, os.path.join(self.root, POINTER))

  def _remove_abandoned_partials(self) -> None:
    """A publisher killed mid-write leaves a partial directory; the single writer clears them."""
    for name in os.listdir(self._versions_dir):
      if name.startswith(".partial-"):
        shutil.rmtree(os.path.join(self._versions_dir, name), ignore_errors=True)

  def _remove_old_versions(self) -> None:
    for version in self.versions()[:-self.keep]:
      shutil.rmtree(self.version_dir(version), ignore_errors=True)


def check_matches_store(version: IndexVersion, store) -> None:
  """Refuses an index that was not built from `store` (a BlockStore)."""
  store.check_matches(num_rows=version.num_rows, fingerprint=version.store_fingerprint,
                      source=version.manifest_path)

"""Versioned indexes on disk: each refresh publishes a complete new version, then moves a pointer.

    INDEX_ROOT/
      LATEST                 {"version": 12}: replaced by an atomic rename, never edited in place
      versions/000012/       manifest.json, embeddings.npy (+ embedding_scales.npy), scann/

A version is of one kind: dense embeddings (one vector a block, above) or a multi-vector index
(`multi_vector_index.py`: a set of vectors a block, e.g. ColBERT's), whose files it writes
through `IndexRoot.publish_files`; each reader refuses the other kind.

A version is written under a temporary name and renamed when complete, and the pointer only ever
names complete versions, so a reader never sees a half-written index. One writer (the refresher)
per root; any number of readers. The manifest records the block store (fingerprint and size) the
embeddings were computed from and the checkpoint step, so loading against another store is an
error, not an out-of-range gather.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

import ml_dtypes
import numpy as np
from etils import epath

from orqa_realm.core import paths
from orqa_realm.core.errors import InputError
from orqa_realm.index.scann_index import ScannConfig, ScannSearcher

FORMAT = "orqa_realm.index"
VERSION = 1
POINTER = "LATEST"
MANIFEST = "manifest.json"
EMBEDDINGS = "embeddings.npy"
SCALES = "embedding_scales.npy"
SCANN_DIR = "scann"

# The kinds of payload a version holds (its manifest's `kind`; dense when absent).
DENSE = "dense"
MULTI_VECTOR = "multi_vector"

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
  kind: str = DENSE  # DENSE or MULTI_VECTOR
  # What a version of another kind than dense records of its storage (its manifest entry named
  # by the kind).
  details: dict[str, Any] = dataclasses.field(default_factory=dict)

  def check_kind(self, kind: str) -> None:
    """Refuses a version of another kind than `kind`, naming both."""
    if self.kind != kind:
      raise InputError(f"this index version holds a {self.kind.replace('_', '-')} index, where a "
                       f"{kind.replace('_', '-')} index is expected", path=self.directory,
                       field="index_dir")

  @property
  def manifest_path(self) -> str:
    return str(epath.Path(self.directory) / MANIFEST)


def save_array(path: epath.Path, array: np.ndarray) -> None:
  with path.open("wb") as f:
    np.save(f, array)


def load_array(path: epath.Path) -> np.ndarray:
  """A .npy file: memory-mapped when local, read whole when remote."""
  if not paths.is_remote(path):
    return np.load(path, mmap_mode="r")
  with path.open("rb") as f:
    return np.load(f)


def save_embeddings(directory: paths.PathLike, embeddings: np.ndarray,
                    storage_dtype: StorageDtype) -> None:
  """Writes [num_rows, dim] float32 embeddings, optionally as bfloat16 or int8.

  int8 uses one symmetric scale per row (max |value| / 127), kept in float32 beside the codes.
  """
  directory = epath.Path(directory)
  if storage_dtype == "float32":
    save_array(directory / EMBEDDINGS, embeddings.astype(np.float32))
  elif storage_dtype == "bfloat16":
    # .npy has no bfloat16: store the bit patterns as uint16.
    save_array(directory / EMBEDDINGS, embeddings.astype(ml_dtypes.bfloat16).view(np.uint16))
  elif storage_dtype == "int8":
    scales = np.maximum(np.abs(embeddings).max(axis=1), 1e-12) / 127.0  # [num_rows]
    codes = np.clip(np.round(embeddings / scales[:, None]), -127, 127).astype(np.int8)
    save_array(directory / EMBEDDINGS, codes)
    save_array(directory / SCALES, scales.astype(np.float32))
  else:
    raise ValueError(f"storage dtype {storage_dtype!r} is not one of {STORAGE_DTYPES}")


def load_embeddings(version: IndexVersion) -> np.ndarray:
  """The version's embeddings as float32 [num_rows, dim] (memory-mapped when stored locally as
  float32)."""
  version.check_kind(DENSE)
  path = epath.Path(version.directory) / EMBEDDINGS
  stored = load_array(path)
  if stored.shape != (version.num_rows, version.embedding_size):
    raise InputError(f"holds embeddings of shape {stored.shape}, the manifest says "
                     f"({version.num_rows}, {version.embedding_size})", path=path)
  if version.storage_dtype == "float32":
    return stored
  if version.storage_dtype == "bfloat16":
    return np.asarray(stored).view(ml_dtypes.bfloat16).astype(np.float32)
  scales = load_array(epath.Path(version.directory) / SCALES)
  return np.asarray(stored, np.float32) * scales[:, None]


def _read_manifest(directory: str) -> IndexVersion:
  path = epath.Path(directory) / MANIFEST
  if not path.exists():
    raise InputError("not an index version: no manifest", path=directory)
  try:
    manifest = json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise InputError(f"malformed manifest: {e.msg}", path=str(path), line=e.lineno) from e
  if manifest.get("format") != FORMAT or manifest.get("format_version") != VERSION:
    raise InputError(f"expected format {FORMAT!r} version {VERSION}", path=str(path),
                     field="format")
  scann = manifest.get("scann")
  return IndexVersion(
      directory=directory, version=manifest["version"], num_rows=manifest["num_rows"],
      embedding_size=manifest["embedding_size"],
      store_fingerprint=manifest["block_store"]["fingerprint"],
      checkpoint_step=manifest.get("checkpoint_step"), storage_dtype=manifest["storage_dtype"],
      scann_config=ScannConfig(**scann) if scann is not None else None,
      metadata=manifest.get("metadata", {}), kind=manifest.get("kind", DENSE),
      details=manifest.get(manifest.get("kind", DENSE)) or {})


class IndexRoot:
  """The versions under one index root directory.

  Args:
    root: the directory (created on the first publish): a local path or a URI (gs://...).
    keep: versions kept on disk; older ones are deleted after a publish (the newest is never).
  """

  def __init__(self, root: paths.PathLike, *, keep: int = 3):
    self.root = str(paths.resolve(root))
    self.keep = max(keep, 1)
    self._versions_dir = epath.Path(self.root) / "versions"

  def versions(self) -> list[int]:
    """Complete versions on disk, oldest first."""
    if not self._versions_dir.exists():
      return []
    return sorted(int(child.name) for child in self._versions_dir.iterdir()
                  if child.name.isdigit())

  def version_dir(self, version: int) -> str:
    return str(self._versions_dir / f"{version:06d}")

  def latest_version(self) -> int | None:
    """The version the pointer names, or None before the first publish."""
    pointer = epath.Path(self.root) / POINTER
    if not pointer.exists():
      return None
    return paths.read_json(pointer)["version"]

  def latest(self) -> IndexVersion | None:
    version = self.latest_version()
    return None if version is None else self.read(version)

  def read(self, version: int) -> IndexVersion:
    return _read_manifest(self.version_dir(version))

  def publish(self, embeddings: np.ndarray, *, store_fingerprint: str,
              checkpoint_step: int | None, storage_dtype: StorageDtype = "float32",
              scann_config: ScannConfig | None = None,
              scann_searcher: ScannSearcher | None = None,
              metadata: dict[str, Any] | None = None) -> IndexVersion:
    """Writes a new version of dense embeddings (and an optional ScaNN index) and points LATEST
    at it. The ScaNN index is built with `scann_config`, or is `scann_searcher` (e.g. a
    previous version's with the new rows upserted), which must hold exactly `embeddings`'
    rows."""
    embeddings = np.asarray(embeddings, np.float32)
    if scann_searcher is not None and scann_searcher.num_rows != len(embeddings):
      raise ValueError(f"the ScaNN index holds {scann_searcher.num_rows} rows, the version "
                       f"{len(embeddings)}")

    def write(partial: epath.Path) -> dict[str, Any]:
      save_embeddings(partial, embeddings, storage_dtype)
      if scann_config is None and scann_searcher is None:
        return {"scann": None}
      searcher = scann_searcher or ScannSearcher.build(embeddings, scann_config)
      with paths.directory_to_write(partial / SCANN_DIR) as scann_dir:
        searcher.save(scann_dir)
      return dict(scann=dataclasses.asdict(searcher.config))

    return self.publish_files(write, kind=DENSE, num_rows=len(embeddings),
                              embedding_size=embeddings.shape[1], storage_dtype=storage_dtype,
                              store_fingerprint=store_fingerprint,
                              checkpoint_step=checkpoint_step, metadata=metadata)

  def publish_files(self, write: Callable[[epath.Path], dict[str, Any]], *, kind: str,
                    num_rows: int, embedding_size: int, storage_dtype: str,
                    store_fingerprint: str, checkpoint_step: int | None,
                    metadata: dict[str, Any] | None = None) -> IndexVersion:
    """Publishes a new version of `kind` whose files `write(directory)` writes (returning
    manifest entries of its own: for a kind other than dense, its details under the kind's
    name), then points LATEST at it: the version appears whole or not at all."""
    versions = self.versions()
    version = (versions[-1] if versions else 0) + 1
    self._versions_dir.mkdir(parents=True, exist_ok=True)
    self._remove_abandoned_partials()
    partial = self._versions_dir / f".partial-{version:06d}-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    try:
      manifest = write(partial)
      manifest.update(
          format=FORMAT, format_version=VERSION, kind=kind, version=version, num_rows=num_rows,
          embedding_size=embedding_size, storage_dtype=storage_dtype,
          block_store=dict(fingerprint=store_fingerprint, num_blocks=num_rows),
          checkpoint_step=checkpoint_step, created=time.time(), metadata=metadata or {})
      (partial / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True),
                                      encoding="utf-8")
      partial.rename(self.version_dir(version))
    except BaseException:
      if partial.exists():
        partial.rmtree()
      raise
    self._point_to(version)
    self._remove_old_versions()
    return self.read(version)

  def _point_to(self, version: int) -> None:
    paths.write_json_atomic(epath.Path(self.root) / POINTER, {"version": version})

  def _remove_abandoned_partials(self) -> None:
    """A publisher killed mid-write leaves a partial directory, or a pointer written under its
    temporary name (`paths.write_json_atomic`) and never renamed; the single writer clears
    them."""
    for child in self._versions_dir.iterdir():
      if child.name.startswith(".partial-"):
        child.rmtree()
    for child in epath.Path(self.root).iterdir():
      if child.name.startswith(f".{POINTER}."):
        child.unlink()

  def _remove_old_versions(self) -> None:
    for version in self.versions()[:-self.keep]:
      epath.Path(self.version_dir(version)).rmtree()


def version_to_continue(root: IndexRoot, kind: str) -> IndexVersion | None:
  """The newest version of `root` that a publish of `kind` would follow, after checking the root
  is writable: None when there is none, or when the pointer names a lost version (the publish
  repairs it); a version of another kind is refused, naming both."""
  paths.check_writable(root.root)
  try:
    latest = root.latest()
  except InputError:
    return None
  if latest is not None and latest.kind != kind:
    raise InputError(f"the index root holds a {latest.kind.replace('_', '-')} index (version "
                     f"{latest.version}), where a {kind.replace('_', '-')} index is published: "
                     "use another --index_dir", path=root.root, field="index_dir")
  return latest


def check_matches_store(version: IndexVersion, store) -> None:
  """Refuses an index that was not built from `store` (a BlockStore)."""
  store.check_matches(num_rows=version.num_rows, fingerprint=version.store_fingerprint,
                      source=version.manifest_path)

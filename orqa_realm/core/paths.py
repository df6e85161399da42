"""Paths of runs, checkpoints, metrics, indexes and block stores: local or remote (`gs://...`).

Every file a run reads or writes goes through `etils.epath` (as orbax, big_vision and MaxText do),
so that a bucket URI is used as it is; a local path is made absolute (orbax needs absolute
paths), a URI is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

from etils import epath

from orqa_realm.core.errors import InputError

PathLike = str | os.PathLike


def is_remote(path: PathLike) -> bool:
  """Whether `path` is a URI (gs://, s3://, ...) rather than a local path."""
  return "://" in os.fspath(path)


def resolve(path: PathLike) -> epath.Path:
  """`path` as an epath.Path: a URI unchanged, a local path absolute."""
  if is_remote(path):
    return epath.Path(os.fspath(path))
  return epath.Path(os.path.abspath(os.fspath(path)))


def check_writable(directory: PathLike) -> None:
  """Creates `directory` if needed and writes and removes a file in it, so that a command finds a
  path it cannot write (permissions, a read-only file system, a file in the way) before its
  work rather than after; an InputError naming the path otherwise."""
  directory = resolve(directory)
  if directory.exists() and not directory.is_dir():
    raise InputError("cannot write here: a file, not a directory", path=str(directory))
  probe = directory / f".write-check-{uuid.uuid4().hex[:8]}"
  try:
    directory.mkdir(parents=True, exist_ok=True)
    probe.write_text("", encoding="utf-8")
    probe.unlink()
  except OSError as e:
    raise InputError(f"cannot write here: {e.strerror or e}", path=str(directory)) from e


def read_json(path: PathLike) -> Any:
  return json.loads(epath.Path(path).read_text(encoding="utf-8"))


def write_json_atomic(path: PathLike, value: Any) -> None:
  """Writes `value` as JSON under a temporary name, then renames it over `path` (readers see the
  old file or the new one, never a half-written one)."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}"
  text = json.dumps(value, indent=2, sort_keys=True)
  if is_remote(path):
    temporary.write_text(text, encoding="utf-8")
  else:
    # On disk, flushed before the rename: a crash never leaves an empty file in its place.
    with open(temporary, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
  temporary.replace(path)


def copy_tree(source: PathLike, target: PathLike) -> None:
  """Copies the files under `source` to `target` (either may be remote)."""
  source, target = epath.Path(source), epath.Path(target)
  target.mkdir(parents=True, exist_ok=True)
  for child in source.iterdir():
    if child.is_dir():
      copy_tree(child, target / child.name)
    else:
      (target / child.name).write_bytes(child.read_bytes())


@contextlib.contextmanager
def local_directory(path: PathLike) -> Iterator[str]:
  """A local directory holding the files of `path`: `path` itself when local, else a temporary
  copy, for libraries that read only local files (ScaNN, bm25s)."""
  if not is_remote(path):
    yield os.fspath(path)
    return
  with tempfile.TemporaryDirectory() as local:
    copy_tree(path, local)
    yield local


@contextlib.contextmanager
def directory_to_write(path: PathLike) -> Iterator[str]:
  """A local directory to write into whose files end up at `path`: `path` itself when local,
  else a temporary directory copied to `path` when the block ends without an error."""
  if not is_remote(path):
    os.makedirs(os.fspath(path), exist_ok=True)
    yield os.fspath(path)
    return
  with tempfile.TemporaryDirectory() as local:
    yield local
    copy_tree(local, path)

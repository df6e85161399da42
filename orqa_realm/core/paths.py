"""Paths of runs, checkpoints, metrics, indexes and block stores: local or remote (`gs://...`).

Every file a run reads or writes goes through `etils.epath` (as orbax, big_vision and MaxText do),
so that a bucket URI is used as it is; a local path is made absolute (orbax needs absolute
paths), a URI is never touched.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from etils import epath

PathLike = str | os.PathLike


def is_remote(path: PathLike) -> bool:
  """Whether `path` is a URI (gs://, s3://, ...) rather than a local path."""
  return "://" in os.fspath(path)


def resolve(path: PathLike) -> epath.Path:
  """`path` as an epath.Path: a URI unchanged, a local path absolute."""
  if is_remote(path):
    return epath.Path(os.fspath(path))
  return epath.Path(os.path.abspath(os.fspath(path)))


def read_json(path: PathLike) -> Any:
  return json.loads(epath.Path(path).read_text(encoding="utf-8"))


def write_json_atomic(path: PathLike, value: Any) -> None:
  """Writes `value` as JSON under a temporary name, then renames it over `path` (readers see the
  old file or the new one, never a half-written one)."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}"
  temporary.write_text(json.dumps(value, indent=2, sort_keys=True), encoding="utf-8")
  temporary.replace(path)

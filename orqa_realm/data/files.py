"""Opening input files (plain or gzip, local or remote), reading JSON lines with located errors,
and writing output directories atomically."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
from collections.abc import Iterator
from typing import Any, TextIO

from etils import epath

from orqa_realm.core import paths
from orqa_realm.core.errors import InputError


@contextlib.contextmanager
def atomic_directory(output_dir: paths.PathLike) -> Iterator[str]:
  """Yields a local temporary directory to write into, whose contents replace `output_dir` (a
  local path or a URI) when the block ends, and which is removed if it raises: a killed writer
  leaves no half-written directory behind. Locally the temporary directory is a sibling renamed
  into place; for a URI it is copied to a sibling there, then renamed."""
  target = paths.resolve(output_dir)
  partial = target.parent / f"{target.name}.partial-{os.getpid()}"
  if partial.exists():
    partial.rmtree()
  with paths.directory_to_write(partial) as local:
    try:
      yield local
    except BaseException:
      if not paths.is_remote(target):
        shutil.rmtree(local, ignore_errors=True)
      raise
  if target.exists():
    target.rmtree()
  partial.rename(target)


def open_text(path: paths.PathLike) -> TextIO:
  """Opens a UTF-8 text file (local or a URI) for reading, decompressing it when the name ends
  in `.gz`."""
  file = epath.Path(path)
  if not file.is_file():
    raise InputError("no such file", path=os.fspath(path))
  if file.name.endswith(".gz"):
    return gzip.open(file.open("rb"), "rt", encoding="utf-8")
  return io.TextIOWrapper(file.open("rb"), encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
  """Parses a whole JSON file."""
  with open_text(path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise InputError(f"malformed JSON: {e.msg}", path=path, line=e.lineno) from e


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
  """Yields (1-based line number, object) for each non-empty line of a JSON-lines file."""
  with open_text(path) as f:
    for line_number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise InputError(f"malformed JSON: {e.msg}", path=path, line=line_number) from e
      if not isinstance(record, dict):
        raise InputError(f"expected a JSON object, got {type(record).__name__}",
                         path=path, line=line_number)
      yield line_number, record


def required_string(record: dict[str, Any], field: str, *, path, line: int | None,
                    allow_empty: bool = False) -> str:
  """Returns record[field] as a string, or raises an InputError naming the field."""
  if field not in record:
    raise InputError("missing field", path=path, line=line, field=field)
  value = record[field]
  if not isinstance(value, str):
    raise InputError(f"expected a string, got {type(value).__name__}",
                     path=path, line=line, field=field)
  if not allow_empty and not value.strip():
    raise InputError("empty string", path=path, line=line, field=field)
  return value


def required_string_list(record: dict[str, Any], field: str, *, path,
                         line: int | None) -> tuple[str, ...]:
  """Returns record[field] as a non-empty tuple of non-empty strings, or raises an InputError."""
  if field not in record:
    raise InputError("missing field", path=path, line=line, field=field)
  return check_string_list(record[field], field, path=path, line=line)


def check_string_list(value: Any, field: str, *, path, line: int | None) -> tuple[str, ...]:
  """Checks that `value` is a non-empty list of non-empty strings."""
  if not isinstance(value, (list, tuple)):
    raise InputError(f"expected a list of strings, got {type(value).__name__}",
                     path=path, line=line, field=field)
  if not value:
    raise InputError("empty list", path=path, line=line, field=field)
  for item in value:
    if not isinstance(item, str):
      raise InputError(f"expected strings, found {type(item).__name__} {item!r}",
                       path=path, line=line, field=field)
    if not item.strip():
      raise InputError("empty string in list", path=path, line=line, field=field)
  return tuple(value)

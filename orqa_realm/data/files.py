"""Opening input files (plain or gzip, local or remote), reading JSON lines with located errors,
and writing output directories atomically."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO, NamedTuple

from etils import epath

from orqa_realm.core import paths
from orqa_realm.core.errors import InputError


class Owner(NamedTuple):
  """How a directory this project writes is recognised: a JSON file in it naming its format.
  Only such a directory (or an empty one) is ever replaced."""
  manifest: str  # e.g. "manifest.json"
  format: str  # its "format" field, e.g. "orqa_realm.block_store"


def read_manifest(directory: paths.PathLike, owner: Owner, what: str,
                  format_version: int) -> tuple[str, dict[str, Any]]:
  """(path, contents) of the JSON manifest `owner` names in `directory`, refused when it is
  unreadable or of another format version (`what` names the directory's kind in the message)."""
  path = str(epath.Path(directory) / owner.manifest)
  try:
    manifest = json.loads(epath.Path(path).read_text(encoding="utf-8"))
  except (OSError, json.JSONDecodeError) as e:
    raise InputError(f"not a readable {what}: {e}", path=path) from e
  if manifest.get("format_version") != format_version:
    raise InputError(f"{what} format {manifest.get('format_version')}, expected "
                     f"{format_version}: delete the directory to rebuild it", path=path)
  return path, manifest


def check_replaceable(directory: paths.PathLike, owner: Owner) -> None:
  """Refuses to replace `directory` unless it is missing, empty, or holds `owner`'s manifest:
  a mistyped --output_dir must never delete someone's folder."""
  target = paths.resolve(directory)
  if not target.exists():
    return
  if not target.is_dir():
    raise InputError("is a file, not a directory: refusing to replace it", path=str(target))
  if not any(target.iterdir()):
    return
  manifest = target / owner.manifest
  try:
    found = json.loads(manifest.read_text(encoding="utf-8")).get("format")
  except (OSError, ValueError, AttributeError):
    found = None
  if found != owner.format:
    raise InputError(f"holds files this project did not write (no {owner.manifest} of format "
                     f"{owner.format!r}): refusing to replace it; choose another directory, or "
                     "remove it yourself", path=str(target))


@contextlib.contextmanager
def atomic_directory(output_dir: paths.PathLike, owner: Owner) -> Iterator[str]:
  """Yields a local temporary directory to write into, whose contents replace `output_dir` (a
  local path or a URI) when the block ends, and which is removed if it raises: a killed writer
  leaves no half-written directory behind. Locally the temporary directory is a sibling renamed
  into place; for a URI it is copied to a sibling there, then renamed. An existing `output_dir`
  is replaced only when `owner` wrote it (`check_replaceable`), checked before and after the
  writing."""
  check_replaceable(output_dir, owner)
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
  try:
    check_replaceable(output_dir, owner)
  except InputError:
    partial.rmtree()
    raise
  # The old directory is renamed aside before the new one takes its place, and removed after:
  # a kill in between leaves one of them whole at its own name, never neither.
  replaced = target.parent / f"{target.name}.replaced-{os.getpid()}"
  if target.exists():
    if replaced.exists():
      replaced.rmtree()
    target.rename(replaced)
  partial.rename(target)
  if replaced.exists():
    replaced.rmtree()


def _open_bytes(path: paths.PathLike) -> BinaryIO:
  """The bytes of a file (local or a URI), decompressed when the name ends in `.gz`."""
  file = epath.Path(path)
  if not file.is_file():
    raise InputError("no such file", path=os.fspath(path))
  if file.name.endswith(".gz"):
    return gzip.open(file.open("rb"), "rb")
  return file.open("rb")


# What reading on may raise: a truncated gzip stream (EOFError), a corrupt one (gzip.BadGzipFile,
# an OSError; zlib.error), or the storage's own failure (OSError).
_READ_ERRORS = (EOFError, OSError, zlib.error)


def _read_error(path, line: int | None, error: Exception) -> InputError:
  """A failure to read on: a damaged gzip stream, or the storage's own error; `line`: the first
  line not read (None for a whole-file read)."""
  what = ("damaged or truncated gzip stream" if os.fspath(path).endswith(".gz")
          else "read error")
  read = "; the lines before it were read" if line is not None else ""
  return InputError(f"{what} ({error}){read}", path=os.fspath(path), line=line)


def _not_utf8(path, line: int, raw: bytes, error: UnicodeDecodeError) -> InputError:
  return InputError(f"not UTF-8: byte {raw[error.start:error.start + 1]!r} at byte "
                    f"{error.start + 1} of the line", path=os.fspath(path), line=line)


def read_lines(path: paths.PathLike) -> Iterator[tuple[int, str]]:
  """(1-based line number, line with its newline) of a UTF-8 text file, plain or gzip, local or
  remote. A byte that is not UTF-8 or a damaged gzip stream is an InputError naming the file and
  the line, not a traceback."""
  line_number = 0
  with _open_bytes(path) as f:
    try:
      for line_number, raw in enumerate(f, start=1):
        try:
          line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
          raise _not_utf8(path, line_number, raw, e) from e
        yield line_number, line[:-2] + "\n" if line.endswith("\r\n") else line
    except _READ_ERRORS as e:
      raise _read_error(path, line_number + 1, e) from e


def read_text(path: paths.PathLike) -> str:
  """A whole UTF-8 text file (plain or gzip), with errors located as `read_lines` does."""
  with _open_bytes(path) as f:
    try:
      data = f.read()
    except _READ_ERRORS as e:
      raise _read_error(path, None, e) from e
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    line_start = data.rfind(b"\n", 0, e.start) + 1
    line_end = data.find(b"\n", e.start)
    raw = data[line_start:line_end if line_end >= 0 else len(data)]
    error = UnicodeDecodeError(e.encoding, raw, e.start - line_start, e.end - line_start, e.reason)
    raise _not_utf8(path, data.count(b"\n", 0, e.start) + 1, raw, error) from e


def read_json(path: str | os.PathLike) -> Any:
  """Parses a whole JSON file."""
  try:
    return json.loads(read_text(path))
  except json.JSONDecodeError as e:
    raise InputError(f"malformed JSON: {e.msg}", path=path, line=e.lineno) from e


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
  """Yields (1-based line number, object) for each non-empty line of a JSON-lines file."""
  for line_number, line in read_lines(path):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise InputError(f"malformed JSON: {e.msg}", path=path, line=line_number) from e
    _check_object(record, path=path, line=line_number)
    yield line_number, record


def _check_object(record: Any, *, path, line: int | None) -> None:
  """An InputError unless `record` is a JSON object (a dict)."""
  if not isinstance(record, dict):
    raise InputError(f"expected a JSON object, got {type(record).__name__}", path=path, line=line)


def required_string(record: dict[str, Any], field: str, *, path, line: int | None,
                    allow_empty: bool = False) -> str:
  """Returns record[field] as a string, or raises an InputError naming the field."""
  _check_object(record, path=path, line=line)
  if field not in record:
    raise InputError("missing field", path=path, line=line, field=field)
  value = record[field]
  if not isinstance(value, str):
    raise InputError(f"expected a string, got {type(value).__name__}",
                     path=path, line=line, field=field)
  if not allow_empty and not value.strip():
    raise InputError("empty string", path=path, line=line, field=field)
  return value


def required_list(record: dict[str, Any], field: str, *, path, line: int | None) -> list[Any]:
  """Returns record[field], a list (possibly empty), or raises an InputError naming the field:
  a missing list is an error, not an empty one (a SQuAD paragraph without `qas` would drop its
  questions without a word)."""
  _check_object(record, path=path, line=line)
  if field not in record:
    raise InputError("missing field", path=path, line=line, field=field)
  if not isinstance(record[field], list):
    raise InputError(f"expected a list, got {type(record[field]).__name__}", path=path, line=line,
                     field=field)
  return record[field]


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

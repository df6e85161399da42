"""Append-only binary columns on disk, read back memory-mapped.

A column is one raw little-endian file; a ragged column (a list of variable-length rows) is a
values column plus an offsets column of `num_rows + 1` int64. Writers stream, so a corpus larger
than memory can be written; every column's dtype, length and SHA-256 go into the owner's manifest,
and readers check file sizes against it before mapping anything.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
from etils import epath

from orqa_realm.core import paths
from orqa_realm.core.errors import InputError


COPY_SLICE = 1 << 24  # values per write when a column is copied


class ColumnWriter:
  """Streams arrays of one dtype into `directory/name.bin`."""

  def __init__(self, directory: str, name: str, dtype):
    self.name = name
    self.dtype = np.dtype(dtype).newbyteorder("<")
    self.length = 0
    self._hash = hashlib.sha256()
    self._file = open(os.path.join(directory, f"{name}.bin"), "wb")

  def append(self, values) -> None:
    data = np.ascontiguousarray(values, dtype=self.dtype).tobytes()
    self._hash.update(data)
    self._file.write(data)
    self.length += len(data) // self.dtype.itemsize

  def close(self) -> dict[str, Any]:
    """Closes the file and returns its manifest entry."""
    self._file.close()
    return {"dtype": self.dtype.str, "length": self.length, "sha256": self._hash.hexdigest()}


class RaggedColumnWriter:
  """Streams variable-length rows: `name.bin` holds the values, `name.offsets.bin` the offsets."""

  def __init__(self, directory: str, name: str, dtype):
    self._values = ColumnWriter(directory, name, dtype)
    self._offsets = ColumnWriter(directory, f"{name}.offsets", np.int64)
    self._offsets.append([0])

  def append(self, row) -> None:
    self._values.append(row)
    self._offsets.append([self._values.length])

  def append_string(self, text: str) -> None:
    self.append(np.frombuffer(text.encode("utf-8"), dtype=np.uint8))

  def extend(self, column: RaggedColumn) -> None:
    """Appends every row of `column` (a grown store starts with its base's rows), copied in
    slices: a Wikipedia-sized column is never held in memory whole."""
    start = self._values.length
    for begin in range(0, len(column.values), COPY_SLICE):
      self._values.append(column.values[begin:begin + COPY_SLICE])
    for begin in range(1, len(column.offsets), COPY_SLICE):
      self._offsets.append(np.asarray(column.offsets[begin:begin + COPY_SLICE], np.int64) + start)


  def close(self) -> dict[str, dict[str, Any]]:
    return {self._values.name: self._values.close(), self._offsets.name: self._offsets.close()}


def open_column(directory: paths.PathLike, name: str, entry: dict[str, Any]) -> np.ndarray:
  """A column, after checking its file against the manifest entry: memory-mapped when local,
  read whole from a URI."""
  path = epath.Path(directory) / f"{name}.bin"
  dtype = np.dtype(entry["dtype"])
  if not path.is_file():
    raise InputError("column file is missing", path=str(path))
  expected_bytes = entry["length"] * dtype.itemsize
  actual_bytes = path.stat().length
  if actual_bytes != expected_bytes:
    raise InputError(f"file has {actual_bytes} bytes but the manifest says {entry['length']} "
                     f"values of {dtype} ({expected_bytes} bytes): truncated or from another "
                     "build", path=str(path))
  if entry["length"] == 0:
    return np.zeros((0,), dtype=dtype)
  if paths.is_remote(path):
    return np.frombuffer(path.read_bytes(), dtype=dtype)
  return np.memmap(path, dtype=dtype, mode="r", shape=(entry["length"],))


def file_sha256(directory: paths.PathLike, name: str) -> str:
  """SHA-256 of a column file, read in chunks."""
  digest = hashlib.sha256()
  with (epath.Path(directory) / f"{name}.bin").open("rb") as f:
    for chunk in iter(lambda: f.read(1 << 24), b""):
      digest.update(chunk)
  return digest.hexdigest()


class RaggedColumn:
  """Read access to a ragged column: `column[i]` is row i as a (memory-mapped) array."""

  def __init__(self, directory: str, name: str, manifest_columns: dict[str, Any]):
    self.values = open_column(directory, name, manifest_columns[name])
    self.offsets = open_column(directory, f"{name}.offsets", manifest_columns[f"{name}.offsets"])
    if len(self.offsets) == 0 or int(self.offsets[-1]) != len(self.values):
      raise InputError("offsets do not end at the number of values",
                       path=os.path.join(directory, f"{name}.offsets.bin"))

  def __len__(self) -> int:
    return len(self.offsets) - 1

  def __getitem__(self, row: int) -> np.ndarray:
    return self.values[self.offsets[row]:self.offsets[row + 1]]

  def string(self, row: int) -> str:
    return bytes(self[row]).decode("utf-8")

  def lengths(self) -> np.ndarray:
    """[num_rows] int64 row lengths."""
    return np.diff(self.offsets)

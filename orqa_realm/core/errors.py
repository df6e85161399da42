"""The error raised for bad user input, located by file, line and field."""

from __future__ import annotations

import os


class InputError(ValueError):
  """Bad input data or configuration; the message names the file, line and field."""

  def __init__(
      self,
      message: str,
      *,
      path: str | os.PathLike | None = None,
      line: int | None = None,
      field: str | None = None,
  ):
    self.path = None if path is None else os.fspath(path)
    self.line = line
    self.field = field
    location = [part for part in (
        self.path,
        None if line is None else f"line {line}",
        None if field is None else f"field '{field}'",
    ) if part]
    super().__init__(f"{', '.join(location)}: {message}" if location else message)

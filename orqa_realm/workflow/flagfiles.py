"""Reading absl flagfiles as the commands will: comments dropped, nested --flagfile= inlined.

A stage's fingerprint covers the flags it will run with, so an edited config (or a config it
includes) makes the stage run again while an untouched one is skipped.
"""

from __future__ import annotations

import os

from orqa_realm.core.errors import InputError
from orqa_realm.data import files

FLAGFILE = "--flagfile="


def expand(args: list[str], *, _seen: tuple[str, ...] = ()) -> list[str]:
  """`args` with each --flagfile=PATH replaced by the flags of PATH, recursively, as absl reads
  them (lines starting with # or // and blank lines are dropped)."""
  expanded = []
  for arg in args:
    if not arg.startswith(FLAGFILE):
      expanded.append(arg)
      continue
    path = os.path.abspath(arg[len(FLAGFILE):])
    if path in _seen:
      raise InputError(f"flagfiles include each other: {' -> '.join(_seen + (path,))}", path=path)
    lines = [line.strip() for _, line in files.read_lines(path)]
    flags = [line for line in lines if line and not line.startswith(("#", "//"))]
    expanded += expand(flags, _seen=_seen + (path,))
  return expanded

"""What every command (`python -m orqa_realm.NAME`) does around its main function: bad input,
and the file system's refusals (permissions, a read-only or full disk), become a one-line error
naming the path instead of a traceback; stray positional arguments are refused; and the log
stays quiet unless --verbosity asks (orbax logs every checkpoint step at INFO)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app, flags, logging

from orqa_realm.core.config import FlagBinder
from orqa_realm.core.errors import InputError


def run(main: Callable[[], None], settings: FlagBinder) -> None:
  """Defines the flags of `settings`, then runs `main` (which reads them) as the command's
  entry point."""
  settings.define()

  def entry(argv: list[str]) -> None:
    if len(argv) > 1:
      sys.exit(f"error: unexpected arguments {argv[1:]} (flags are --name=value)")
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    try:
      main()
    except InputError as e:
      sys.exit(f"error: {e}")
    except OSError as e:
      # The file system's refusals (permissions, a read-only or full disk) name their path;
      # an OSError without an errno is a program's, and keeps its traceback.
      if e.errno is None:
        raise
      where = ", ".join(str(name) for name in (e.filename, e.filename2) if name)
      sys.exit(f"error: {where}: {e.strerror}" if where else f"error: {e.strerror}")

  app.run(entry)

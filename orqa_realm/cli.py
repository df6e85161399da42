"""What every command (`python -m orqa_realm.NAME`) does around its main function: bad input,
and the file system's refusals (permissions, a read-only or full disk), become a one-line error
naming the path instead of a traceback; stray positional arguments are refused; and the log
stays quiet unless --verbosity asks: progress, metrics, warnings and errors, without the libraries'
chatter (orbax logs every checkpoint step at INFO, and warns of a read-only checkpoint directory
each time one is opened for reading)."""

from __future__ import annotations

import logging as logging_std
import os
import sys
from collections.abc import Callable

from absl import app, flags, logging

from orqa_realm.core.config import FlagBinder
from orqa_realm.core.errors import InputError


QUIET_LIBRARIES = ("orbax",)  # below ERROR, their records reach the console only with --verbosity


def is_library_chatter(record: logging_std.LogRecord) -> bool:
  """Whether a log record is a QUIET_LIBRARIES' record below ERROR."""
  return record.levelno < logging_std.ERROR and any(
      f"{os.sep}{library}{os.sep}" in record.pathname for library in QUIET_LIBRARIES)


def quiet_console() -> None:
  """Logs warnings and errors only, and the libraries' chatter not even then. On absl's handler,
  which every logger's records reach (bm25s logs at INFO through a logger of its own)."""
  logging.set_verbosity(logging.WARNING)
  handler = logging.get_absl_handler()
  handler.setLevel(logging_std.WARNING)
  handler.addFilter(lambda record: not is_library_chatter(record))


def run(main: Callable[..., None], settings: FlagBinder, *,
        takes_arguments: bool = False) -> None:
  """Defines the flags of `settings`, then runs `main` (which reads them) as the command's
  entry point; with `takes_arguments`, `main(arguments)` gets the positional arguments (which
  are refused otherwise)."""
  settings.define()

  def entry(argv: list[str]) -> None:
    if len(argv) > 1 and not takes_arguments:
      sys.exit(f"error: unexpected arguments {argv[1:]} (flags are --name=value)")
    if not flags.FLAGS["verbosity"].present:
      quiet_console()
    try:
      if takes_arguments:
        main(argv[1:])
      else:
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

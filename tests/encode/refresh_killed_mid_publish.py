"""`python -m orqa_realm.refresh`, killed (SIGKILL, nothing cleaned up) at one point of its
first publish: `--kill_at=embeddings` once the new version's embeddings are written, before the
version is renamed complete; `--kill_at=pointer` once the new LATEST is written under its
temporary name, before the rename that publishes it. The fault test runs it as a subprocess."""

import os
import signal
import sys

from orqa_realm import cli, refresh
from orqa_realm.core import paths
from orqa_realm.index import storage


def die(*_args, **_kwargs):
  os.kill(os.getpid(), signal.SIGKILL)


def kill_after(function):
  def wrapped(*args, **kwargs):
    function(*args, **kwargs)
    die()
  return wrapped


def write_pointer_then_die(path, value):
  """`paths.write_json_atomic` up to its rename."""
  path = paths.resolve(path)
  (path.parent / f".{path.name}.killed0").write_text(str(value), encoding="utf-8")
  die()


if __name__ == "__main__":
  kill_at = sys.argv.pop(1)
  if kill_at == "--kill_at=embeddings":
    storage.save_embeddings = kill_after(storage.save_embeddings)
  elif kill_at == "--kill_at=pointer":
    storage.paths.write_json_atomic = write_pointer_then_die
  else:
    sys.exit(f"expected --kill_at=embeddings|pointer first, got {kill_at}")
  cli.run(refresh.main, refresh.SETTINGS)

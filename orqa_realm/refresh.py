"""The index refresher as its own process (or host), beside a training run.

    python -m orqa_realm.refresh --workdir=runs/NAME --index_dir=runs/NAME/index \\
        [--refresh_poll_seconds=10] [--index_backend=scann]

It reads the retriever's settings and the block store from the run (`run.json`), and indexes
each new checkpoint until interrupted. Give it other devices than the trainer's (e.g.
CUDA_VISIBLE_DEVICES, or another host) so that refreshing never slows training; training then
picks versions up through its IndexHandle.
"""

from __future__ import annotations

import dataclasses
import signal
import threading

from orqa_realm import cli
from orqa_realm.core import config as settings_lib
from orqa_realm.core import run_directory
from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import BlockStore
from orqa_realm.encode import embedding, refresher, runs


@dataclasses.dataclass(frozen=True)
class RefreshCommand:
  """Which run to index, and which store."""
  workdir: str = setting(
      "", "The training run whose checkpoints are indexed, with the retriever settings it saved.")
  block_store: str = setting(
      "", "Block store to embed; empty: the one the run trains on (from its run.json).")


SETTINGS = settings_lib.FlagBinder("refresh")
SETTINGS.bind("refresh", RefreshCommand)
SETTINGS.bind("refresher", refresher.RefresherConfig)
SETTINGS.bind("index", embedding.IndexConfig)


def main() -> None:
  command, index = SETTINGS.build("refresh"), SETTINGS.build("index")
  if not command.workdir:
    raise InputError("--workdir is required", field="workdir")
  run = runs.open_retriever_run(command.workdir)
  store = BlockStore(command.block_store or runs.trained_block_store(
      run_directory.read_run(command.workdir)))
  stop, wake = threading.Event(), threading.Event()
  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, lambda *_: (stop.set(), wake.set()))
  worker = refresher.refresher_for_run(run, store, index, on_publish=lambda version: print(
      f"published index version {version.version} from checkpoint {version.checkpoint_step}: "
      f"{version.directory}", flush=True))
  print(f"watching {worker.reader.directory}; publishing to {worker.index_root.root}", flush=True)
  worker.run(stop, wake, poll_seconds=SETTINGS.build("refresher").poll_seconds)
  worker.close()


if __name__ == "__main__":
  cli.run(main, SETTINGS)

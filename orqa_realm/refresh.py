"""The index refresher as its own process (or host), beside a training run.

    python -m orqa_realm.refresh --workdir=runs/NAME --index_dir=runs/NAME/index \\
        [--refresh_poll_seconds=10] [--index_backend=scann]

It reads the retriever's settings and the block store from the run (`run.json`), and indexes
each new checkpoint until interrupted. A multi-vector run (`--task=colbert`, `me_bert`,
`poly_encoder`) is published as a multi-vector index (`--colbert_nbits`, ...). Give it other
devices than the trainer's (e.g. CUDA_VISIBLE_DEVICES, or another host) so that refreshing never
slows training; training then picks versions up through its IndexHandle.
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
from orqa_realm.data.pretrained import resolve_model_dir
from orqa_realm.data.tokenization import Tokenizer
from orqa_realm.encode import embedding, refresher, runs
from orqa_realm.encode import multi_vector as multi_vector_encode
from orqa_realm.modeling import multi_vector


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
SETTINGS.bind("multi-vector index", multi_vector_encode.MultiVectorIndexConfig)


def main() -> None:
  command = SETTINGS.build("refresh")
  if not command.workdir:
    raise InputError("--workdir is required", field="workdir")
  description = run_directory.read_run(command.workdir)
  store = BlockStore(command.block_store or runs.trained_block_store(description))
  stop, wake = threading.Event(), threading.Event()
  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, lambda *_: (stop.set(), wake.set()))
  announce = lambda version: print(
      f"published index version {version.version} from checkpoint {version.checkpoint_step}: "
      f"{version.directory}", flush=True)
  if multi_vector.MULTI_VECTOR in description.model:
    SETTINGS.check_read(["refresh", "refresher", "multi-vector index"],
                        "refresh of a multi-vector run")
    tokenizer = Tokenizer(resolve_model_dir(runs.trained_bert(description)))
    worker = refresher.multi_vector_refresher_for_run(
        runs.open_multi_vector_run(command.workdir), store, tokenizer,
        SETTINGS.build("multi-vector index"), on_publish=announce)
  else:
    SETTINGS.check_read(["refresh", "refresher", "index"], "refresh of a dense retriever")
    worker = refresher.refresher_for_run(runs.open_retriever_run(command.workdir), store,
                                         SETTINGS.build("index"), on_publish=announce)
  print(f"watching {worker.reader.directory}; publishing to {worker.index_root.root}", flush=True)
  worker.run(stop, wake, poll_seconds=SETTINGS.build("refresher").poll_seconds)
  worker.close()


if __name__ == "__main__":
  cli.run(main, SETTINGS)

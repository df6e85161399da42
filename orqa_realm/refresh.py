"""The index refresher as its own process (or host), beside a training run.

    python -m orqa_realm.refresh --flagfile=configs/NAME.cfg --workdir=runs/NAME \\
        --index_dir=runs/NAME/index [--refresh_poll_seconds=10]

It reads the same flags as the trainer (so the run's flagfile works unchanged), takes the model
configuration from the run's workdir, and indexes each new checkpoint until interrupted. Give it
other devices than the trainer's (e.g. CUDA_VISIBLE_DEVICES, or another host) so that refreshing
never slows training; training then picks versions up through its IndexHandle.
"""

from __future__ import annotations

import signal
import sys
import threading

from absl import app

# The trainer's flags, so that a run's flagfile (or its saved flags.txt) parses here too.
from orqa_realm.core import checkpoints  # noqa: F401 (imported for its flags)
from orqa_realm import train  # noqa: F401 (imported for its flags)
from orqa_realm.core.errors import InputError
from orqa_realm.encode import refresher


def main(argv):
  del argv
  workdir = checkpoints.WORKDIR.value
  if not workdir:
    sys.exit("error: --workdir is required")
  stop, wake = threading.Event(), threading.Event()
  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, lambda *_: (stop.set(), wake.set()))
  try:
    worker = refresher.refresher_from_flags(
        workdir, checkpoints.read_model_config(workdir),
        on_publish=lambda version: print(
            f"published index version {version.version} from checkpoint "
            f"{version.checkpoint_step}: {version.directory}", flush=True))
  except InputError as e:
    sys.exit(f"error: {e}")
  print(f"watching {worker.reader.directory}; publishing to {worker.index_root.root}", flush=True)
  worker.run(stop, wake, poll_seconds=train.REFRESH_POLL_SECONDS.value)
  worker.close()


if __name__ == "__main__":
  app.run(main)

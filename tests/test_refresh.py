"""`python -m orqa_realm.refresh`, as a user runs it beside a training run: the retriever and the
block store come from the run's run.json, the newest checkpoint is indexed, SIGTERM stops it."""

import signal
import subprocess
import sys
import time

from orqa_realm.encode import embedding
from orqa_realm.index.storage import IndexRoot
from tests.conftest import REPO_ROOT, subprocess_env
from tests.tasks.tiny_ict import TINY_RETRIEVER


def test_refresh_indexes_the_runs_newest_checkpoint_and_stops_on_sigterm(
    squad_block_store, tiny_ict_run, tmp_path):
  index_dir = tmp_path / "index"
  process = subprocess.Popen(
      [sys.executable, "-m", "orqa_realm.refresh", f"--workdir={tiny_ict_run}",
       f"--index_dir={index_dir}", "--embed_dtype=float32", "--refresh_poll_seconds=0.2"],
      cwd=REPO_ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)
  root = IndexRoot(str(index_dir))
  deadline = time.monotonic() + 300
  while root.latest_version() is None:
    assert process.poll() is None, process.communicate()[1][-3000:]
    assert time.monotonic() < deadline, "no version published in 300 s"
    time.sleep(0.2)
  process.send_signal(signal.SIGTERM)
  stdout, stderr = process.communicate(timeout=120)
  assert process.returncode == 0, stderr[-3000:]
  assert "published index version 1 from checkpoint 2" in stdout
  version = root.latest()
  assert version.checkpoint_step == 2 and version.num_rows == len(squad_block_store)
  assert embedding.indexed_retriever(version) == TINY_RETRIEVER

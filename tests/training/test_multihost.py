"""Several processes, as on a multi-host pod: 2 processes x 2 CPU devices give the ICT losses and
parameters of 1 process x 4 devices, each building only its own rows; and across 2 processes
every step of ANCE uses the index version the first process chose."""

import json
import socket
import subprocess
import sys

import numpy as np
import pytest

from orqa_realm.data.blocks import BlockStore
from orqa_realm.index.storage import IndexRoot
from tests.conftest import REPO_ROOT, subprocess_env
from tests.training.multihost_check import publish_random_version


def free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def run_processes(mode: str, num_processes: int, devices_each: int, out, store, bert) -> None:
  """Runs `num_processes` processes of tests/training/multihost_check.py together."""
  port = free_port()
  env = subprocess_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_each}")
  processes = [subprocess.Popen(
      [sys.executable, "-m", "tests.training.multihost_check", mode, str(process_id),
       str(num_processes), str(port), str(out), store, bert],
      cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for process_id in range(num_processes)]
  outputs = [process.communicate(timeout=900) for process in processes]
  for process, (_, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr[-3000:]


@pytest.mark.slow
def test_two_processes_train_ict_as_one_process_does(squad_block_store, tiny_bert_dir, tmp_path):
  store = squad_block_store.directory
  run_processes("ict", 1, 4, tmp_path / "one", store, tiny_bert_dir)
  run_processes("ict", 2, 2, tmp_path / "two", store, tiny_bert_dir)
  one, two = np.load(tmp_path / "one" / "ict.npz"), np.load(tmp_path / "two" / "ict.npz")
  assert len(one["losses"]) == 3
  np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-6)
  names = [name for name in one.files if name != "losses"]
  assert names and names == [name for name in two.files if name != "losses"]
  for name in names:
    np.testing.assert_allclose(two[name], one[name], atol=1e-5, err_msg=name)


@pytest.mark.slow
def test_every_process_uses_the_index_version_the_first_chose(squad_block_store, tiny_bert_dir,
                                                              tmp_path):
  store = BlockStore(squad_block_store.directory)
  publish_random_version(IndexRoot(str(tmp_path / "index"), keep=10), store, seed=1)
  run_processes("ance", 2, 2, tmp_path, squad_block_store.directory, tiny_bert_dir)
  first, second = (json.loads((tmp_path / f"ance_{process}.json").read_text())
                   for process in (0, 1))
  # Version 2 appeared while the first process built step 1; the second process, which looks
  # for versions only every minute, still switched to it at step 2 with the first.
  assert first == [1, 1, 2]
  assert second == first

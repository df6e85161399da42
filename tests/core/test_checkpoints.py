"""Checkpoint reading around the writer: a failed restore's abandoned reads are not reported,
a listing that races with a deleted checkpoint is read again, and params a checkpoint does not
hold are refused by name."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orqa_realm.core import checkpoints
from orqa_realm.core.errors import InputError


def asyncio_report(message: str) -> logging.LogRecord:
  return logging.LogRecord("asyncio", logging.ERROR, "base_events.py", 1771, message, (), None)


def test_only_the_abandoned_reads_of_a_quieted_directory_are_dropped(tmp_path):
  checkpoints._quiet_abandoned_reads(str(tmp_path / "checkpoints"))
  read_of_it = asyncio_report(
      "Future exception was never retrieved\nfuture: <Future finished exception=ValueError("
      f"'Error reading \"params.kernel/0.0\" in OCDBT database at local file "
      f"\"{tmp_path}/checkpoints/2/default/\": Truncated Zstd-compressed stream')>")
  read_of_another = asyncio_report(read_of_it.getMessage().replace(str(tmp_path), "/elsewhere"))
  other_report = asyncio_report(f"Task was destroyed but it is pending: {tmp_path}/checkpoints")
  asyncio_logger = logging.getLogger("asyncio")
  assert not asyncio_logger.filter(read_of_it)
  assert asyncio_logger.filter(read_of_another)
  assert asyncio_logger.filter(other_report)


def test_a_listing_that_races_with_a_deleted_checkpoint_is_read_again(tmp_path, monkeypatch):
  (tmp_path / "checkpoints").mkdir()
  reader = checkpoints.CheckpointReader(tmp_path / "checkpoints")
  reload, failures = reader._manager.reload, []

  def reload_racing_once():
    if not failures:
      failures.append(1)
      raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "checkpoints/1"))
    return reload()

  monkeypatch.setattr(reader._manager, "reload", reload_racing_once)
  assert reader.latest_step() is None
  assert failures == [1]


def test_params_the_checkpoint_does_not_hold_are_refused_by_name(tmp_path):
  writer = checkpoints.Checkpointer(tmp_path / "checkpoints", save_every_steps=1, keep=1,
                                    async_save=False)
  writer.save(1, {"params": {"query": {"kernel": jnp.ones(3)}}}, force=True)
  writer.close()
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  vector = jax.ShapeDtypeStruct((3,), jnp.float32, sharding=sharding)
  with checkpoints.CheckpointReader(tmp_path / "checkpoints") as reader:
    np.testing.assert_array_equal(
        reader.restore_params(1, {"query": {"kernel": vector}})["query"]["kernel"], np.ones(3))
    with pytest.raises(InputError, match=r"checkpoint 1 holds no params\['block'\]\['kernel'\]"):
      reader.restore_params(1, {"query": {"kernel": vector}, "block": {"kernel": vector}})

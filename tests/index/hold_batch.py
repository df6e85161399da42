"""A task wrapper for the refresher tests: the batch of one step is made only once the index
handle has loaded a wanted version, the tests' way of making a refresh land mid-run
deterministically."""

import time


class HoldBatchUntilVersion:
  """`task`, except that its batch of `step` waits (up to 300 s) until `handle` has loaded
  version `version` or a newer one. The loop takes the index before making the batch, so the
  next step is the first to train on that version."""

  def __init__(self, task, handle, *, step: int, version: int = 1):
    self._task, self._handle, self._step, self._version = task, handle, step, version

  def __getattr__(self, name):
    return getattr(self._task, name)

  def train_batch(self, step, params=None, mesh=None, index=None):
    if step == self._step:
      deadline = time.monotonic() + 300
      self._handle.wait_for_version(timeout=300)
      while self._handle.current().version.version < self._version:
        assert time.monotonic() < deadline, f"no index version {self._version} in 300 s"
        time.sleep(0.1)
    return self._task.train_batch(step, params, mesh, index)

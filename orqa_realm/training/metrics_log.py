"""A run's metrics: written each logged step to `metrics.jsonl` and TensorBoard, read back and
plotted against the step (`python -m orqa_realm.plot_metrics`)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import jax
import numpy as np
from etils import epath

from orqa_realm.core import paths
from orqa_realm.core.errors import InputError

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
  """Metrics to `metrics.jsonl` and TensorBoard (first host only).

  With a remote workdir the records are rewritten whole at each write (object stores such as
  GCS have no append: gcsfs would overwrite), and the TensorBoard events are written locally and
  their changed files copied to `workdir/tensorboard` (tensorboardX writes local files only).
  """

  def __init__(self, workdir: str, resumed_step: int):
    self._enabled = jax.process_index() == 0
    self.path = paths.resolve(workdir) / METRICS_FILE
    if not self._enabled:
      return
    self._lines: list[str] = []
    if self.path.exists():
      # Steps past the checkpoint we resume from will be run (and logged) again.
      self._lines = [line for line in self.path.read_text(encoding="utf-8").splitlines(True)
                     if json.loads(line)["step"] <= resumed_step]
      self.path.write_text("".join(self._lines), encoding="utf-8")
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

    self._tensorboard = paths.resolve(workdir) / "tensorboard"
    self._local_events = (tempfile.mkdtemp(prefix="tensorboard-")
                          if paths.is_remote(self._tensorboard) else None)
    self._writer = SummaryWriter(self._local_events or str(self._tensorboard))
    self._copied_sizes: dict[str, int] = {}

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self._enabled:
      return
    line = json.dumps({"step": step, **metrics}) + "\n"
    self._lines.append(line)
    if paths.is_remote(self.path):
      self.path.write_text("".join(self._lines), encoding="utf-8")
    else:
      with self.path.open("a", encoding="utf-8") as f:
        f.write(line)
    for name, value in metrics.items():
      self._writer.add_scalar(name, value, step)
    self._writer.flush()
    self._copy_events()

  def _copy_events(self) -> None:
    """Copies the local event files that grew since the last copy to the remote workdir."""
    if self._local_events is None:
      return
    self._tensorboard.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(self._local_events):
      local = os.path.join(self._local_events, name)
      size = os.path.getsize(local)
      if self._copied_sizes.get(name) != size:
        with open(local, "rb") as f:
          (self._tensorboard / name).write_bytes(f.read())
        self._copied_sizes[name] = size

  def close(self) -> None:
    if self._enabled:
      self._writer.close()
      self._copy_events()
      if self._local_events is not None:
        shutil.rmtree(self._local_events, ignore_errors=True)


def read_metric(path: paths.PathLike, name: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values) of the records of `path` (metrics.jsonl) that log `name`, in file order."""
  steps, values = [], []
  with epath.Path(path).open(encoding="utf-8") as f:
    for line_number, line in enumerate(f, start=1):
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise InputError(f"not JSON: {e.msg}", path=path, line=line_number) from e
      if name in record:
        steps.append(record["step"])
        values.append(record[name])
  if not steps:
    raise InputError(f"no record logs {name!r}", path=path, field=name)
  return np.asarray(steps), np.asarray(values, np.float64)


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
  """[n] mean of each value and the `window - 1` before it (fewer at the start)."""
  sums = np.cumsum(np.concatenate([[0.0], values]))
  ends = np.arange(1, len(values) + 1)
  starts = np.maximum(0, ends - window)
  return (sums[ends] - sums[starts]) / (ends - starts)


def plot_metrics(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str, title: str,
                 window: int) -> None:
  """One panel per metric of `curves` (name -> (steps, values)), sharing the step axis."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top

  figure, axes = pyplot.subplots(len(curves), 1, sharex=True, squeeze=False,
                                 figsize=(7, 2.2 * len(curves) + 0.6))
  for axis, (name, (steps, values)) in zip(axes[:, 0], curves.items()):
    axis.plot(steps, values, marker=".", linewidth=0.8, alpha=0.5 if window > 1 else 1.0,
              label="logged")
    if window > 1:
      axis.plot(steps, trailing_mean(values, window), linewidth=2,
                label=f"mean of last {window}")
      axis.legend(fontsize="small")
    axis.set_ylabel(name)
    axis.grid(alpha=0.3)
  axes[-1, 0].set_xlabel("step")
  axes[0, 0].set_title(title)
  figure.tight_layout()
  with epath.Path(path).open("wb") as f:
    figure.savefig(f, dpi=120, format="png")
  pyplot.close(figure)

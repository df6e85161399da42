"""Plots training metrics of a run (its `metrics.jsonl`) against the step, one panel per metric.

    python -m orqa_realm.plot_metrics --workdir=runs/realm_demo \\
        --metrics=retrieval_utility,loss,index_version --plot_output=runs/realm_demo/curves.png

Each panel shows the logged values and, with --smoothing_window > 1, their trailing mean over that
many logged points (REALM's retrieval utility of a batch of 8 is noisy). The same numbers are
printed as a table.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from absl import app, flags

from orqa_realm.core import checkpoints
from orqa_realm.core.errors import InputError

_METRICS = flags.DEFINE_list("metrics", ["loss"], "Metric names to plot, one panel each.")
_OUTPUT = flags.DEFINE_string("plot_output", None, "PNG to write (default: WORKDIR/metrics.png).")
_SMOOTHING_WINDOW = flags.DEFINE_integer(
    "smoothing_window", 1, "Trailing mean over this many logged points, drawn over the raw ones.")


def read_metric(path: str, name: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values) of the records of `path` (metrics.jsonl) that log `name`, in file order."""
  steps, values = [], []
  with open(path, encoding="utf-8") as f:
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
  figure.savefig(path, dpi=120)
  pyplot.close(figure)


def main(argv):
  del argv
  if not checkpoints.WORKDIR.value:
    sys.exit("error: --workdir is required")
  path = os.path.join(checkpoints.WORKDIR.value, "metrics.jsonl")
  try:
    if not os.path.isfile(path):
      raise InputError("no metrics.jsonl: has the run logged a step?", path=path)
    curves = {name: read_metric(path, name) for name in _METRICS.value}
  except InputError as e:
    sys.exit(f"error: {e}")
  output = _OUTPUT.value or os.path.join(checkpoints.WORKDIR.value, "metrics.png")
  plot_metrics(curves, output, checkpoints.WORKDIR.value, _SMOOTHING_WINDOW.value)
  for name, (steps, values) in curves.items():
    smoothed = trailing_mean(values, _SMOOTHING_WINDOW.value)
    print(f"{name}: " + ", ".join(f"{step}: {value:.4g} ({mean:.4g})" for step, value, mean
                                  in zip(steps, values, smoothed)))
  print(f"wrote {output}")


if __name__ == "__main__":
  app.run(main)

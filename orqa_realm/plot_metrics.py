"""Plots training metrics of a run (its `metrics.jsonl`) against the step, one panel per metric.

    python -m orqa_realm.plot_metrics --workdir=runs/realm_demo \\
        --metrics=retrieval_utility,loss,index_version --plot_output=runs/realm_demo/curves.png

Each panel shows the logged values and, with --smoothing_window > 1, their trailing mean over that
many logged points (REALM's retrieval utility of a batch of 8 is noisy). The same numbers are
printed as a table.
"""

from __future__ import annotations

import dataclasses

from orqa_realm import cli
from orqa_realm.core import config as settings_lib
from orqa_realm.core import paths
from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.training import metrics_log


@dataclasses.dataclass(frozen=True)
class PlotCommand:
  """Which run's metrics are plotted, and where."""
  workdir: str = setting("", "The training run whose metrics.jsonl is plotted.")
  metrics: tuple[str, ...] = setting(("loss",), "Metric names to plot, one panel each.")
  plot_output: str = setting("", "PNG to write (default: WORKDIR/metrics.png).")
  smoothing_window: int = setting(
      1, "Trailing mean over this many logged points, drawn over the raw ones.")


SETTINGS = settings_lib.FlagBinder("plot_metrics")
SETTINGS.bind("plot", PlotCommand)


def main() -> None:
  command = SETTINGS.build("plot")
  if not command.workdir:
    raise InputError("--workdir is required", field="workdir")
  path = paths.resolve(command.workdir) / metrics_log.METRICS_FILE
  if not path.exists():
    raise InputError("no metrics.jsonl: has the run logged a step?", path=str(path))
  curves = {name: metrics_log.read_metric(path, name) for name in command.metrics}
  output = command.plot_output or str(paths.resolve(command.workdir) / "metrics.png")
  metrics_log.plot_metrics(curves, output, command.workdir, command.smoothing_window)
  for name, (steps, values) in curves.items():
    smoothed = metrics_log.trailing_mean(values, command.smoothing_window)
    print(f"{name}: " + ", ".join(f"{step}: {value:.4g} ({mean:.4g})" for step, value, mean
                                  in zip(steps, values, smoothed)))
  print(f"wrote {output}")


if __name__ == "__main__":
  cli.run(main, SETTINGS)

"""The pipeline's summary: each stage's status and time, and the held-out metrics of each
evaluation side by side, printed as a table and written to `WORKDIR/summary.json`."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from orqa_realm.core import paths
from orqa_realm.workflow.runner import StageResult

SUMMARY = "summary.json"
METRICS = "metrics.json"


def summarize(results: Sequence[StageResult], evaluations: Sequence[str]) -> dict[str, Any]:
  """{stages: {name: status, seconds, output, command}, metrics: {evaluation stage: metrics}}."""
  stages = {result.stage.name: dict(
      title=result.stage.title, status=result.status, seconds=round(result.seconds, 1),
      output=result.stage.output, output_identity=result.output,
      command=f"python -m orqa_realm.{result.stage.command}") for result in results}
  metrics = {}
  for result in results:
    if result.stage.name in evaluations:
      with open(os.path.join(result.stage.output, METRICS), encoding="utf-8") as f:
        metrics[result.stage.name] = json.load(f)
  return dict(stages=stages, total_seconds=round(sum(r.seconds for r in results), 1),
              metrics=metrics)


def _percent(value: float | None) -> str:
  return "-" if value is None else f"{100 * value:.1f}"


def format_table(summary: dict[str, Any]) -> str:
  """The summary as two plain-text tables: stages and times, then the metrics in percent."""
  lines = [f"{'stage':<10} {'status':<8} {'seconds':>8}  output"]
  for name, stage in summary["stages"].items():
    lines.append(f"{name:<10} {stage['status']:<8} {stage['seconds']:>8.1f}  {stage['output']}")
  lines.append(f"{'total':<10} {'':<8} {summary['total_seconds']:>8.1f}")
  evaluations = summary["metrics"]
  if evaluations:
    ks = sorted({key for metrics in evaluations.values()
                 for key in metrics.get("answer_recall", {})}, key=lambda k: int(k[1:]))
    gold_ks = sorted({key for metrics in evaluations.values()
                      for key in metrics.get("gold_paragraph_recall", {})},
                     key=lambda k: int(k[1:]))
    header = ([f"R{k}" for k in ks] + [f"gold R{k}" for k in gold_ks] + ["EM"])
    lines += ["", f"held-out questions ({next(iter(evaluations.values()))['num_queries']}), "
              "percent: answer recall@k (R@k), gold-paragraph recall@k, reader exact match",
              f"{'retrieval':<10} " + " ".join(f"{column:>10}" for column in header)]
    for name, metrics in evaluations.items():
      values = ([metrics.get("answer_recall", {}).get(k) for k in ks]
                + [metrics.get("gold_paragraph_recall", {}).get(k) for k in gold_ks]
                + [metrics.get("exact_match")])
      label = metrics.get("retrieval", name)
      lines.append(f"{label:<10} " + " ".join(f"{_percent(v):>10}" for v in values))
  return "\n".join(lines)


def write_summary(workdir: str, summary: dict[str, Any]) -> str:
  """Writes summary.json into `workdir` (atomically); its path."""
  path = os.path.join(workdir, SUMMARY)
  paths.write_json_atomic(path, summary)
  return path

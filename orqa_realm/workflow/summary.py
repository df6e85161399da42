"""The pipeline's summary: each stage's status and time, the held-out metrics of each evaluation
side by side, and each evaluation's difference from the baselines (BM25, say) tested query by
query, printed as tables and written to `WORKDIR/summary.json`; and a stage list run to its
summary, as the pipeline commands do."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from orqa_realm.core import paths
from orqa_realm.core.errors import InputError
from orqa_realm.encode import significance
from orqa_realm.workflow import records, runner
from orqa_realm.workflow.runner import StageResult
from orqa_realm.workflow.stages import Stage

SUMMARY = "summary.json"
METRICS = "metrics.json"


class PairedTest(NamedTuple):
  """Which evaluations are compared with which, query by query, on what."""
  baselines: tuple[str, ...]  # evaluation stages every other evaluation is compared with
  # Per-query metrics (per_query.jsonl keys), e.g. answer_recall@1; those a baseline's file
  # lacks (gold-paragraph recall of questions that name no paragraph) are left out.
  metrics: tuple[str, ...]
  resamples: int = 10_000  # swaps of the randomisation test, samples of the bootstrap


def paired_differences(outputs: dict[str, str], test: PairedTest
                       ) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
  """{baseline: {evaluation: {metric: paired comparison}}} for each baseline present in
  `outputs` ({evaluation stage: its output directory}) and each other evaluation: the mean
  difference, the queries better and worse, the two-sided paired randomisation p-value and the
  95% bootstrap interval (`encode/significance.py`)."""
  baselines = [name for name in test.baselines if name in outputs]
  if not baselines:
    return {}  # nothing to compare with: no per-query file is read
  per_query = {name: significance.read_per_query(where) for name, where in outputs.items()}
  found = {}
  for baseline in baselines:
    found[baseline] = {}
    metrics = [metric for metric in test.metrics if metric in per_query[baseline].values]
    for name, where in outputs.items():
      if name == baseline:
        continue
      system = significance.aligned(per_query[baseline], per_query[name], where)
      found[baseline][name] = {
          metric: significance.paired_comparison(
              metric, per_query[baseline].values[metric], system.values[metric],
              resamples=test.resamples)._asdict()
          for metric in metrics}
  return found


def summarize(results: Sequence[StageResult], evaluations: Sequence[str],
              paired_test: PairedTest | None = None) -> dict[str, Any]:
  """{stages: {name: status, seconds, output, command}, metrics: {evaluation stage: metrics},
  paired: {baseline: {evaluation: {metric: comparison}}} (with a `paired_test`)}."""
  stages = {result.stage.name: dict(
      title=result.stage.title, status=result.status, seconds=round(result.seconds, 1),
      output=result.stage.output, output_identity=result.output,
      command=f"python -m orqa_realm.{result.stage.command}") for result in results}
  metrics = {}
  for result in results:
    if result.stage.name in evaluations:
      with open(os.path.join(result.stage.output, METRICS), encoding="utf-8") as f:
        metrics[result.stage.name] = json.load(f)
  summary = dict(stages=stages, total_seconds=round(sum(r.seconds for r in results), 1),
                 metrics=metrics)
  if paired_test:
    summary["paired"] = paired_differences(
        {result.stage.name: result.stage.output for result in results
         if result.stage.name in evaluations}, paired_test)
  return summary


def _percent(value: float | None) -> str:
  return "-" if value is None else f"{100 * value:.1f}"


def _difference(comparison: dict[str, Any]) -> str:
  """A paired comparison as `+1.2 (p=0.031)`: percentage points and the randomisation p."""
  p_value = comparison["p_value"]
  p = "p<0.001" if p_value < 0.001 else f"p={p_value:.3f}"
  return f"{100 * comparison['difference']:+.1f} ({p})"


def retrieval_label(name: str, metrics: dict[str, Any]) -> str:
  """An evaluation's row label: its kind of retrieval (dense, bm25, hybrid)."""
  return metrics.get("retrieval", name)


def format_table(summary: dict[str, Any],
                 label_of: Callable[[str, dict[str, Any]], str] = retrieval_label,
                 row_title: str = "retrieval") -> str:
  """The summary as plain-text tables: stages and times; the metrics in percent, a row per
  evaluation stage labelled `label_of(stage name, its metrics)` under `row_title`; and, for each
  baseline of the paired test, every other evaluation's difference from it with its p-value."""
  width = max(10, *map(len, summary["stages"]))
  lines = [f"{'stage':<{width}} {'status':<8} {'seconds':>8}  output"]
  for name, stage in summary["stages"].items():
    lines.append(f"{name:<{width}} {stage['status']:<8} {stage['seconds']:>8.1f}  "
                 f"{stage['output']}")
  lines.append(f"{'total':<{width}} {'':<8} {summary['total_seconds']:>8.1f}")
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
              f"{row_title:<{width}} " + " ".join(f"{column:>10}" for column in header)]
    for name, metrics in evaluations.items():
      values = ([metrics.get("answer_recall", {}).get(k) for k in ks]
                + [metrics.get("gold_paragraph_recall", {}).get(k) for k in gold_ks]
                + [metrics.get("exact_match")])
      lines.append(f"{label_of(name, metrics):<{width}} "
                   + " ".join(f"{_percent(v):>10}" for v in values))
  for baseline, compared in summary.get("paired", {}).items():
    metric_names = list(next(iter(compared.values()), {}))
    lines += ["", f"against {label_of(baseline, evaluations[baseline])}, question by question: "
              "difference in percentage points (two-sided paired randomisation test)",
              f"{row_title:<{width}} " + " ".join(f"{name:>22}" for name in metric_names)]
    for name, by_metric in compared.items():
      lines.append(f"{label_of(name, evaluations[name]):<{width}} "
                   + " ".join(f"{_difference(by_metric[m]):>22}" for m in metric_names))
  return "\n".join(lines)


def write_summary(workdir: str, summary: dict[str, Any]) -> str:
  """Writes summary.json into `workdir` (atomically); its path."""
  path = os.path.join(workdir, SUMMARY)
  paths.write_json_atomic(path, summary)
  return path


def run_and_summarize(workdir: str, stages: Sequence[Stage], evaluations: Sequence[str],
                      label_of: Callable[[str, dict[str, Any]], str] = retrieval_label,
                      row_title: str = "retrieval", paired_test: PairedTest | None = None
                      ) -> None:
  """Runs `stages` under `workdir` (skipping complete ones), then prints the summary table of
  the `evaluations` stages (`format_table`), with each one's paired test against the baselines
  of `paired_test`, and writes summary.json; a failed stage is an error naming it."""
  try:
    results = runner.run_pipeline(workdir, stages)
  except runner.StageFailed as e:
    record = records.record_path(workdir, e.stage.name)
    raise InputError(f"stage {e.stage.name} failed (exit code {e.returncode}; its message is "
                     f"above); fix it and run the pipeline again: complete stages are skipped "
                     f"(its command line is in {record})") from e
  result = summarize(results, evaluations, paired_test)
  path = write_summary(workdir, result)
  print("\n" + format_table(result, label_of, row_title) + f"\n\nwrote {path}", flush=True)

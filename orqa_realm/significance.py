"""Compares evaluations query by query: is a system's difference from a baseline more than
chance?

    python -m orqa_realm.significance --baseline=runs/eval/scifact_bm25 \\
        --systems=runs/eval/scifact_deepct,runs/eval/scifact_dpr --metrics=ndcg_cut_10

Each directory is an `evaluate` --output_dir (its `per_query.jsonl` and `metrics.json`); all
must have evaluated the same queries. For each system and metric it prints the two means, the
mean difference, the queries the system scores higher, lower and equal on, the two-sided paired
randomisation p-value and a bootstrap confidence interval of the difference
(`encode/significance.py`). The metrics are those of the baseline's file by default: nDCG@10 and
recall@k of BEIR queries; answer recall@k, gold-paragraph recall@k and exact match of questions.
"""

from __future__ import annotations

import dataclasses

from orqa_realm import cli
from orqa_realm.core import config as settings_lib
from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.encode import significance


@dataclasses.dataclass(frozen=True)
class SignificanceCommand:
  """Which evaluations are compared, on what, and how."""
  baseline: str = setting("", "The evaluation (an `evaluate` --output_dir) compared against.")
  systems: tuple[str, ...] = setting((), "Evaluations each compared with the baseline.")
  metrics: tuple[str, ...] = setting(
      (), "Per-query metrics to compare (default: every metric of the baseline's file).")
  resamples: int = setting(10_000, "Random swaps of the randomisation test, and bootstrap "
                           "samples of the interval.")
  confidence: float = setting(0.95, "Confidence level of the interval.")
  seed: int = setting(0, "Seed of the swaps and the bootstrap samples.")

  def __post_init__(self):
    if self.resamples < 1:
      raise InputError("must be at least 1", field="resamples")
    if not 0 < self.confidence < 1:
      raise InputError("must be between 0 and 1", field="confidence")


SETTINGS = settings_lib.FlagBinder("significance")
SETTINGS.bind("significance", SignificanceCommand)


def comparisons(command: SignificanceCommand) -> list[tuple[str, significance.PairedComparison]]:
  """(system directory, comparison) for each system and metric, metrics in the order asked."""
  baseline = significance.read_per_query(command.baseline)
  metrics = command.metrics or tuple(baseline.values)
  for metric in metrics:
    if metric not in baseline.values:
      raise InputError(f"the baseline has no per-query {metric!r} (it has "
                       f"{sorted(baseline.values)})", path=command.baseline, field="metrics")
  found = []
  for where in command.systems:
    system = significance.aligned(baseline, significance.read_per_query(where), where)
    for metric in metrics:
      if metric not in system.values:
        raise InputError(f"no per-query {metric!r}", path=where, field="metrics")
      found.append((where, significance.paired_comparison(
          metric, baseline.values[metric], system.values[metric], resamples=command.resamples,
          confidence=command.confidence, seed=command.seed)))
  return found


def format_table(baseline: str, found: list[tuple[str, significance.PairedComparison]],
                 confidence: float) -> str:
  """A Markdown table, one row per system and metric."""
  level = f"{100 * confidence:g}%"
  lines = [f"baseline: {baseline}", "",
           f"| system | metric | queries | baseline | system | difference | better / worse / "
           f"equal | p (paired randomisation) | {level} interval |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  for where, c in found:
    lines.append(f"| {where} | {c.metric} | {c.num_queries} | {c.baseline_mean:.4f} | "
                 f"{c.system_mean:.4f} | {c.difference:+.4f} | {c.better} / {c.worse} / "
                 f"{c.equal} | {c.p_value:.4f} | {c.interval[0]:+.4f} to {c.interval[1]:+.4f} |")
  return "\n".join(lines)


def main() -> None:
  command = SETTINGS.build("significance")
  if not command.baseline:
    raise InputError("--baseline is required", field="baseline")
  if not command.systems:
    raise InputError("name at least one evaluation to compare", field="systems")
  print(format_table(command.baseline, comparisons(command), command.confidence))


if __name__ == "__main__":
  cli.run(main, SETTINGS)

"""Per-query results of an evaluation, and the paired comparison of two evaluations over the
same queries.

`evaluate` writes one line per query or question to `per_query.jsonl` beside `metrics.json`:
its id and each metric's value for it (nDCG@10 and recall@k of a BEIR query; 0 or 1 for answer
recall@k, gold-paragraph recall@k and exact match of a question). Two such files over the same
queries compare pair by pair: the mean difference, how many queries each system wins, a
two-sided paired randomisation test (each query's two values swapped at random; Smucker et al.
2007 recommend it for IR metrics) and a bootstrap confidence interval of the mean difference.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import scipy.stats
from etils import epath

from orqa_realm.core.errors import InputError

PER_QUERY_FILE = "per_query.jsonl"
METRICS_FILE = "metrics.json"
# The key of a line that names its query; every other key is a metric.
QUERY_KEY = "query"


class PerQuery(NamedTuple):
  """One evaluation's per-query results."""
  source: str  # the queries' file, as metrics.json records it
  query_ids: list[str]  # in the evaluation's order
  values: dict[str, np.ndarray]  # {metric: [queries]}


class PairedComparison(NamedTuple):
  """A system against a baseline on one metric, query by query."""
  metric: str
  num_queries: int
  baseline_mean: float
  system_mean: float
  difference: float  # system - baseline, averaged over the queries
  better: int  # queries where the system scores higher
  worse: int
  equal: int
  p_value: float  # two-sided paired randomisation test of the mean difference
  interval: tuple[float, float]  # bootstrap confidence interval of the mean difference


def write_per_query(directory: epath.Path, query_ids: Sequence[str],
                    values: dict[str, np.ndarray]) -> None:
  """`per_query.jsonl` in `directory`: for each query, its id and each metric's value."""
  columns = {name: np.asarray(column, dtype=np.float64) for name, column in values.items()}
  for name, column in columns.items():
    if column.shape != (len(query_ids),):
      raise ValueError(f"{name} has {column.shape} values for {len(query_ids)} queries")
  lines = []
  for i, query_id in enumerate(query_ids):
    row = {QUERY_KEY: query_id, **{name: float(column[i]) for name, column in columns.items()}}
    lines.append(json.dumps(row))
  (directory / PER_QUERY_FILE).write_text("".join(line + "\n" for line in lines),
                                          encoding="utf-8")


def read_per_query(directory: str) -> PerQuery:
  """The per-query results `evaluate` wrote to `directory`, or an error naming the file, line and
  field at fault."""
  path = epath.Path(directory) / PER_QUERY_FILE
  metrics_path = epath.Path(directory) / METRICS_FILE
  if not path.exists():
    raise InputError(f"no {PER_QUERY_FILE}: not an output directory of `evaluate`, or one written "
                     "before evaluate kept per-query results (evaluate again)", path=str(path))
  if not metrics_path.exists():
    raise InputError(f"no {METRICS_FILE} beside {PER_QUERY_FILE}", path=str(metrics_path))
  source = json.loads(metrics_path.read_text(encoding="utf-8")).get("source", "")
  query_ids, rows, names = [], [], None
  for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
    try:
      row = json.loads(line)
    except json.JSONDecodeError as error:
      raise InputError(f"not JSON: {error}", path=str(path), line=line_number) from error
    if not isinstance(row, dict) or not isinstance(row.get(QUERY_KEY), str):
      raise InputError("a line must be an object naming its query", path=str(path),
                       line=line_number, field=QUERY_KEY)
    row_names = sorted(key for key in row if key != QUERY_KEY)
    if names is None:
      names = row_names
    elif row_names != names:
      raise InputError(f"metrics {row_names}, not the first line's {names}", path=str(path),
                       line=line_number)
    for name in names:
      if not isinstance(row[name], (int, float)) or isinstance(row[name], bool):
        raise InputError(f"not a number: {row[name]!r}", path=str(path), line=line_number,
                         field=name)
    query_ids.append(row[QUERY_KEY])
    rows.append([row[name] for name in names])
  if not query_ids:
    raise InputError("no queries", path=str(path))
  if len(set(query_ids)) != len(query_ids):
    raise InputError("a query is listed twice", path=str(path), field=QUERY_KEY)
  table = np.asarray(rows, dtype=np.float64)  # [queries, metrics]
  return PerQuery(source, query_ids, {name: table[:, j] for j, name in enumerate(names)})


def aligned(baseline: PerQuery, system: PerQuery, system_where: str) -> PerQuery:
  """`system` in `baseline`'s query order, refused unless both evaluated the same queries."""
  if baseline.source != system.source:
    raise InputError(f"evaluated on {system.source}, the baseline on {baseline.source}",
                     path=system_where)
  if set(baseline.query_ids) != set(system.query_ids):
    missing = sorted(set(baseline.query_ids) ^ set(system.query_ids))
    raise InputError(f"{len(missing)} queries are in one evaluation only (e.g. {missing[:3]})",
                     path=system_where)
  position = {query_id: i for i, query_id in enumerate(system.query_ids)}
  order = np.array([position[query_id] for query_id in baseline.query_ids])
  return PerQuery(system.source, list(baseline.query_ids),
                  {name: column[order] for name, column in system.values.items()})


def _mean_difference(system: np.ndarray, baseline: np.ndarray, axis: int = -1) -> np.ndarray:
  return np.mean(system - baseline, axis=axis)


def paired_comparison(metric: str, baseline: np.ndarray, system: np.ndarray, *,
                      resamples: int = 10_000, confidence: float = 0.95,
                      seed: int = 0) -> PairedComparison:
  """`system` against `baseline` ([queries] values of `metric`, the same queries in the same
  order): the randomisation test swaps each query's two values with probability 1/2 (exact,
  over all 2^n swaps, when `resamples` reaches that count), and the interval is the percentile
  bootstrap of the mean difference over queries drawn with replacement."""
  baseline = np.asarray(baseline, dtype=np.float64)
  system = np.asarray(system, dtype=np.float64)
  differences = system - baseline  # [queries]
  observed = float(differences.mean())
  if not differences.any():
    # Nothing to permute or resample: every swap gives the observed difference, zero.
    p_value, interval = 1.0, (0.0, 0.0)
  else:
    test = scipy.stats.permutation_test(
        (system, baseline), _mean_difference, permutation_type="samples", vectorized=True,
        n_resamples=resamples, alternative="two-sided", rng=np.random.default_rng(seed))
    p_value = float(test.pvalue)
    bootstrap = scipy.stats.bootstrap(
        (differences,), np.mean, n_resamples=resamples, confidence_level=confidence,
        method="percentile", vectorized=True, rng=np.random.default_rng([seed, 1]))
    interval = (float(bootstrap.confidence_interval.low),
                float(bootstrap.confidence_interval.high))
  return PairedComparison(
      metric=metric, num_queries=len(differences), baseline_mean=float(baseline.mean()),
      system_mean=float(system.mean()), difference=observed,
      better=int((differences > 0).sum()), worse=int((differences < 0).sum()),
      equal=int((differences == 0).sum()), p_value=p_value, interval=interval)

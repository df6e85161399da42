"""Per-query results and the paired comparison: the randomisation test against a direct
enumeration of every swap in NumPy, the bootstrap interval's coverage of the observed
difference, and the per-query file's round trip and refusals."""

import itertools
import json

import numpy as np
import pytest
from etils import epath

from orqa_realm.core.errors import InputError
from orqa_realm.encode import significance


def exact_randomisation_p(system: np.ndarray, baseline: np.ndarray) -> float:
  """Two-sided p of the mean difference over all 2^n swaps of each query's two values."""
  differences = system - baseline
  observed = abs(differences.mean())
  signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(differences))))  # [2^n, n]
  swapped = np.abs((signs * differences).mean(axis=1))
  # A relative tolerance, as scipy's, so that ties in floating point count as ties.
  return float(np.mean(swapped >= observed * (1 - 1e-14)))


def test_the_randomisation_test_equals_every_swap_enumerated():
  rng = np.random.default_rng(0)
  baseline = rng.uniform(size=10)
  system = baseline + rng.normal(0.1, 0.2, size=10)
  found = significance.paired_comparison("ndcg", baseline, system, resamples=2 ** 10)
  assert found.p_value == pytest.approx(exact_randomisation_p(system, baseline), abs=1e-12)
  assert found.difference == pytest.approx(np.mean(system - baseline))
  assert (found.baseline_mean, found.system_mean) == pytest.approx((baseline.mean(),
                                                                    system.mean()))


def test_binary_hits_count_wins_and_losses_and_a_clear_gain_is_significant():
  # 300 questions: the system alone right on 40, the baseline alone on 10.
  baseline = np.zeros(300)
  system = np.zeros(300)
  system[:40] = 1
  baseline[40:50] = 1
  baseline[100:200] = system[100:200] = 1
  found = significance.paired_comparison("answer_recall@1", baseline, system, seed=3)
  assert (found.better, found.worse, found.equal) == (40, 10, 250)
  assert found.difference == pytest.approx(0.1)
  assert found.p_value < 0.001
  low, high = found.interval
  assert 0 < low < 0.1 < high
  same = significance.paired_comparison("answer_recall@1", baseline, baseline)
  assert (same.p_value, same.interval, same.equal) == (1.0, (0.0, 0.0), 300)


def test_noise_alone_is_not_significant_and_the_interval_holds_zero():
  rng = np.random.default_rng(1)
  baseline = rng.uniform(size=300)
  system = np.clip(baseline + rng.normal(0, 0.05, size=300), 0, 1)
  found = significance.paired_comparison("ndcg", baseline, system)
  assert found.p_value > 0.05
  assert found.interval[0] < 0 < found.interval[1]


def test_per_query_files_round_trip_and_align(tmp_path):
  directory = epath.Path(tmp_path)
  (directory / significance.METRICS_FILE).write_text(json.dumps({"source": "claims.tsv"}))
  significance.write_per_query(directory, ["q2", "q1"], {"ndcg": np.array([0.5, 1.0]),
                                                          "hit": np.array([True, False])})
  read = significance.read_per_query(str(tmp_path))
  assert read.source == "claims.tsv" and read.query_ids == ["q2", "q1"]
  np.testing.assert_array_equal(read.values["hit"], [1.0, 0.0])
  other = significance.PerQuery("claims.tsv", ["q1", "q2"], {"ndcg": np.array([0.1, 0.2])})
  aligned = significance.aligned(read, other, "other")
  np.testing.assert_array_equal(aligned.values["ndcg"], [0.2, 0.1])  # in the baseline's order
  with pytest.raises(InputError, match="2 queries are in one evaluation only"):
    significance.aligned(read, other._replace(query_ids=["q1", "q3"]), "other")
  with pytest.raises(InputError, match="evaluated on answers.json, the baseline on claims.tsv"):
    significance.aligned(read, other._replace(source="answers.json"), "other")


@pytest.mark.parametrize("lines, message", [
    (['{"query": "a", "ndcg": 1}', "{not json"], "line 2: not JSON"),
    (['{"query": "a", "ndcg": 1}', '{"query": "b", "recall": 1}'], "line 2: metrics"),
    (['{"query": "a", "ndcg": "high"}'], "line 1, field 'ndcg': not a number"),
    (['{"ndcg": 1}'], "field 'query': a line must be an object naming its query"),
    (['{"query": "a", "ndcg": 1}', '{"query": "a", "ndcg": 0}'], "a query is listed twice"),
])
def test_a_bad_per_query_file_is_refused_with_its_line(tmp_path, lines, message):
  (tmp_path / significance.METRICS_FILE).write_text("{}")
  (tmp_path / significance.PER_QUERY_FILE).write_text("\n".join(lines) + "\n")
  with pytest.raises(InputError, match=message):
    significance.read_per_query(str(tmp_path))


def test_an_evaluation_without_per_query_results_is_refused(tmp_path):
  with pytest.raises(InputError, match="no per_query.jsonl"):
    significance.read_per_query(str(tmp_path))

"""The summary's paired test: each evaluation against each baseline present, question by
question, with the exact randomisation p-value where the differing questions are few, metrics
a baseline lacks left out, and the differences printed under the metrics table."""

import json

import numpy as np
import pytest
from etils import epath

from orqa_realm.core.errors import InputError
from orqa_realm.encode import significance
from orqa_realm.workflow import summary

# Few enough that the randomisation test enumerates all 2^12 swaps (exact p-values).
QUESTIONS = [f"q{i}" for i in range(12)]


def evaluation(directory, values, source="squad:test.json"):
  """An `evaluate` output directory holding `values` ({metric: [questions]}) per question."""
  directory.mkdir()
  (directory / "metrics.json").write_text(json.dumps(dict(source=source, retrieval="dense")))
  significance.write_per_query(epath.Path(directory), QUESTIONS, values)
  return str(directory)


@pytest.fixture
def outputs(tmp_path):
  base = np.zeros(12)
  base[:4] = 1
  better = base.copy()
  better[4:10] = 1  # 6 more questions answered, none lost
  mixed = base.copy()
  mixed[[4, 5]] = 1
  mixed[[0, 1, 2]] = 0
  return dict(
      bm25=evaluation(tmp_path / "bm25", {"answer_recall@1": base}),
      better=evaluation(tmp_path / "better", {"answer_recall@1": better,
                                              "exact_match": better}),
      mixed=evaluation(tmp_path / "mixed", {"answer_recall@1": mixed, "exact_match": mixed}))


def test_each_evaluation_is_tested_against_each_baseline_present(outputs):
  test = summary.PairedTest(baselines=("bm25", "absent"),
                            metrics=("answer_recall@1", "exact_match"))
  found = summary.paired_differences(outputs, test)
  assert list(found) == ["bm25"] and list(found["bm25"]) == ["better", "mixed"]
  # The baseline has no exact match per question: only recall is compared.
  better = found["bm25"]["better"]
  assert list(better) == ["answer_recall@1"]
  better = better["answer_recall@1"]
  assert better["difference"] == pytest.approx(6 / 12)
  assert (better["better"], better["worse"], better["equal"]) == (6, 0, 6)
  # 6 differing questions, all one way: of the swaps of their signs only all-kept and
  # all-swapped are as extreme (two-sided).
  assert better["p_value"] == pytest.approx(2 / 2 ** 6)
  mixed = found["bm25"]["mixed"]["answer_recall@1"]
  assert mixed["difference"] == pytest.approx(-1 / 12)
  assert (mixed["better"], mixed["worse"]) == (2, 3)
  # 5 differing questions, 2 up and 3 down: five signs of +-1 never sum to 0, so every swap
  # is at least as far from 0 as the observed sum (-1): p = 1.
  assert mixed["p_value"] == pytest.approx(1.0)

def test_the_table_prints_each_difference_with_its_p_value(outputs):
  test = summary.PairedTest(baselines=("bm25",), metrics=("answer_recall@1",))
  result = dict(stages={"evaluate": dict(status="ran", seconds=1.0, output="eval")},
                total_seconds=1.0,
                metrics={name: dict(retrieval=name, num_queries=12) for name in outputs},
                paired=summary.paired_differences(outputs, test))
  lines = summary.format_table(result).splitlines()
  start = lines.index("against bm25, question by question: difference in percentage points "
                      "(two-sided paired randomisation test)")
  assert lines[start + 2].split() == ["better", "+50.0", "(p=0.031)"]
  assert lines[start + 3].split() == ["mixed", "-8.3", "(p=1.000)"]


def test_evaluations_of_other_questions_are_refused(outputs, tmp_path):
  outputs = dict(outputs, other=evaluation(tmp_path / "other", {"answer_recall@1": np.ones(12)},
                                           source="squad:train.json"))
  with pytest.raises(InputError, match="the baseline on squad:test.json"):
    summary.paired_differences(outputs, summary.PairedTest(("bm25",), ("answer_recall@1",)))

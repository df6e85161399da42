"""The significance command on two evaluations: its table, and its refusals."""

import json
import subprocess
import sys

import numpy as np
from etils import epath

from orqa_realm.encode import significance
from tests.conftest import REPO_ROOT, subprocess_env


def write_evaluation(directory, values):
  directory.mkdir()
  (directory / significance.METRICS_FILE).write_text(json.dumps({"source": "test.json"}))
  significance.write_per_query(epath.Path(directory), [f"q{i}" for i in range(len(values))],
                               {"answer_recall@1": np.array(values)})


def run(*flags):
  return subprocess.run([sys.executable, "-m", "orqa_realm.significance", *flags],
                        cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True,
                        timeout=300)


def test_the_command_prints_each_systems_comparison_and_refuses_an_unknown_metric(tmp_path):
  write_evaluation(tmp_path / "bm25", [1, 1, 0, 0, 1, 0, 1, 0])
  write_evaluation(tmp_path / "dense", [1, 0, 1, 1, 1, 1, 1, 0])
  result = run(f"--baseline={tmp_path / 'bm25'}", f"--systems={tmp_path / 'dense'}",
               "--resamples=256")
  assert result.returncode == 0, result.stderr[-2000:]
  row = next(line for line in result.stdout.splitlines() if "answer_recall@1 |" in line)
  # 8 questions, means 0.5 and 0.75; better on 3, worse on 1; with 256 = 2^8 swaps the test
  # is exact: |mean difference| >= 0.25 in 10 of the 16 sign patterns of the four that differ.
  assert "| 8 | 0.5000 | 0.7500 | +0.2500 | 3 / 1 / 4 | 0.6250 |" in row
  refused = run(f"--baseline={tmp_path / 'bm25'}", f"--systems={tmp_path / 'dense'}",
                "--metrics=exact_match")
  assert refused.returncode != 0
  assert "field 'metrics': the baseline has no per-query 'exact_match'" in refused.stderr

"""plot_metrics: a metric's logged points read back in order, the trailing mean against a direct
loop, and the CLI's plot and refusal of a metric no record logs."""

import json
import subprocess
import sys

import numpy as np
import pytest

from orqa_realm.core.errors import InputError
from orqa_realm.training.metrics_log import read_metric, trailing_mean
from tests.conftest import REPO_ROOT, subprocess_env

RECORDS = [{"step": 10, "loss": 9.0, "retrieval_utility": 0.5},
           {"step": 10, "eval_loss": 8.0},
           {"step": 20, "loss": 8.0, "retrieval_utility": -0.25},
           {"step": 30, "loss": 7.5, "retrieval_utility": 0.125}]


@pytest.fixture
def workdir(tmp_path):
  with open(tmp_path / "metrics.jsonl", "w", encoding="utf-8") as f:
    f.writelines(json.dumps(record) + "\n" for record in RECORDS)
  return tmp_path


def test_read_metric_keeps_only_records_that_log_it(workdir):
  steps, values = read_metric(str(workdir / "metrics.jsonl"), "retrieval_utility")
  np.testing.assert_array_equal(steps, [10, 20, 30])
  np.testing.assert_array_equal(values, [0.5, -0.25, 0.125])
  with pytest.raises(InputError, match="no record logs 'masked_accuracy'"):
    read_metric(str(workdir / "metrics.jsonl"), "masked_accuracy")


def test_trailing_mean_equals_a_loop():
  values = np.random.default_rng(0).normal(size=23)
  for window in (1, 2, 5, 30):
    expected = [values[max(0, i - window + 1):i + 1].mean() for i in range(len(values))]
    np.testing.assert_allclose(trailing_mean(values, window), expected, rtol=1e-12)


def test_cli_writes_the_plot_and_refuses_an_unlogged_metric(workdir):
  output = workdir / "curves.png"
  result = subprocess.run(
      [sys.executable, "-m", "orqa_realm.plot_metrics", f"--workdir={workdir}",
       "--metrics=retrieval_utility,loss", "--smoothing_window=2", f"--plot_output={output}"],
      cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "retrieval_utility: 10: 0.5 (0.5), 20: -0.25 (0.125), 30: 0.125 (-0.0625)" in result.stdout
  result = subprocess.run(
      [sys.executable, "-m", "orqa_realm.plot_metrics", f"--workdir={workdir}",
       "--metrics=masked_accuracy"],
      cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
  assert result.returncode != 0 and "no record logs 'masked_accuracy'" in result.stderr

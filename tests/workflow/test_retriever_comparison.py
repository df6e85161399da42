"""The comparison of dual-encoder training methods: every stage's command line passes its
command's own flag checks (each method's flags are read by its task), ADORE runs over DPR's index,
the methods that score the same candidate lists share one teacher cache, and comparisons that
cannot run are refused before any stage does."""

import collections
import json
import subprocess
import sys

import pytest

from orqa_realm.compare_retrievers import method_label
from orqa_realm.core.errors import InputError
from orqa_realm.workflow.retriever_comparison import (METHODS, RetrieverComparison,
                                                      comparison_stages, evaluation_stages)
from tests.conftest import REPO_ROOT, subprocess_env
from tests.test_configs import CHECK


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("comparison")
  return comparison_stages(RetrieverComparison(
      workdir=str(workdir), teacher_workdir="/runs/teacher", bm25_dir="/runs/bm25"))


def test_every_command_line_passes_its_commands_flag_checks(stages, tmp_path):
  by_command = collections.defaultdict(list)
  for stage in stages:
    flagfile = tmp_path / f"{stage.name}.flags"
    flagfile.write_text("\n".join(stage.args) + "\n")
    by_command[f"orqa_realm.{stage.command}"].append(str(flagfile))
  assert {command: len(files) for command, files in by_command.items()} == {
      "orqa_realm.train": 8, "orqa_realm.embed": 7, "orqa_realm.evaluate": 16}
  for command, flagfiles in by_command.items():
    result = subprocess.run([sys.executable, "-c", CHECK, command, *flagfiles], cwd=REPO_ROOT,
                            env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [], command


def test_adore_trains_over_dprs_index_and_teacher_caches_are_shared(stages):
  by_name = {stage.name: stage for stage in stages}
  assert [name for name in by_name if name.startswith("train_")] == [
      f"train_{method}" for method in METHODS]
  assert "index_adore" not in by_name
  names = list(by_name)
  assert names.index("train_adore") > names.index("index_dpr")
  adore = by_name["train_adore"].args
  assert f"--index_dir={by_name['index_dpr'].output}" in adore
  assert f"--retriever_workdir={by_name['train_dpr'].output}" in adore
  assert f"--index_dir={by_name['index_dpr'].output}" in by_name["eval_adore"].args
  cache = lambda name: [arg for arg in by_name[name].args if arg.startswith("--teacher_scores")]
  assert cache("train_margin_mse") == cache("train_listwise_kl")
  assert cache("train_margin_mse") != cache("train_dpr_denoised") != cache("train_tasb")
  assert cache("train_dpr") == cache("train_star") == []


def test_the_table_names_each_method():
  comparison = RetrieverComparison(workdir="/w", methods=("dpr", "star"), bm25_dir="/b")
  assert [method_label(name, {}) for name in evaluation_stages(comparison)] == [
      "dpr", "star", "dpr + BM25", "star + BM25"]


@pytest.mark.parametrize("settings, message", [
    (dict(methods=("adore",)), "adore trains over the dpr method's index"),
    (dict(methods=("dpr", "margin_mse")), "learn from a cross-encoder: pass --teacher_workdir"),
    (dict(methods=("dpr", "colbert")), r"unknown methods \['colbert'\]"),
    (dict(methods=("dpr", "dpr")), "named twice"),
])
def test_comparisons_that_cannot_run_are_refused(settings, message):
  with pytest.raises(InputError, match=message):
    comparison_stages(RetrieverComparison(workdir="/w", **settings))

"""The comparison of dual-encoder training methods: every stage's command line passes its
command's own flag checks (each method's flags are read by its task), BM25 is evaluated as the
baseline every method is tested against question by question, ADORE runs over DPR's index
at its block length, the methods that score the same candidate lists share one teacher cache
(named by what the scores depend on), and comparisons that cannot run are refused before any
stage does."""

import collections
import dataclasses
import json
import subprocess
import sys

import pytest

from orqa_realm.compare_retrievers import method_label
from orqa_realm.core.errors import InputError
from orqa_realm.workflow.retriever_comparison import (METHODS, RetrieverComparison,
                                                      comparison_stages, evaluation_stages,
                                                      paired_test)
from orqa_realm.workflow.summary import PairedTest
from tests.conftest import REPO_ROOT, subprocess_env
from tests.test_configs import CHECK


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
  """A comparison of every method over stand-ins of its inputs (only their names are read)."""
  root = tmp_path_factory.mktemp("comparison")
  for directory in ("teacher", "blocks", "bm25"):
    (root / directory).mkdir()
  (root / "teacher" / "run.json").write_text("{}")
  (root / "blocks" / "manifest.json").write_text("{}")
  return RetrieverComparison(workdir=str(root / "out"), teacher_workdir=str(root / "teacher"),
                             block_store=str(root / "blocks"), bm25_dir=str(root / "bm25"))


@pytest.fixture(scope="module")
def stages(comparison):
  return {stage.name: stage for stage in comparison_stages(comparison)}


def test_every_command_line_passes_its_commands_flag_checks(stages, tmp_path):
  by_command = collections.defaultdict(list)
  for stage in stages.values():
    flagfile = tmp_path / f"{stage.name}.flags"
    flagfile.write_text("\n".join(stage.args) + "\n")
    by_command[f"orqa_realm.{stage.command}"].append(str(flagfile))
  assert {command: len(files) for command, files in by_command.items()} == {
      "orqa_realm.train": 8, "orqa_realm.embed": 7, "orqa_realm.evaluate": 17}
  for command, flagfiles in by_command.items():
    result = subprocess.run([sys.executable, "-c", CHECK, command, *flagfiles], cwd=REPO_ROOT,
                            env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [], command


def test_adore_trains_over_dprs_index_at_its_block_length(stages):
  assert [name for name in stages if name.startswith("train_")] == [
      f"train_{method}" for method in METHODS]
  assert "index_adore" not in stages
  names = list(stages)
  assert names.index("train_adore") > names.index("index_dpr")
  adore = stages["train_adore"].args
  assert f"--index_dir={stages['index_dpr'].output}" in adore
  assert f"--retriever_workdir={stages['train_dpr'].output}" in adore
  # configs/embed_squad_minilm.cfg embeds at 288, configs/dpr_squad_demo.cfg (first, so
  # replaced) trains at 256.
  assert adore[0].startswith("--flagfile=") and "--block_length=288" in adore
  assert not any(arg.startswith("--block_length") for arg in stages["train_dpr"].args)
  assert f"--index_dir={stages['index_dpr'].output}" in stages["eval_adore"].args


def teacher_cache(stage):
  return [arg for arg in stage.args if arg.startswith("--teacher_scores")]


def test_teacher_caches_are_shared_and_named_by_what_they_depend_on(comparison, stages):
  assert teacher_cache(stages["train_margin_mse"]) == teacher_cache(stages["train_listwise_kl"])
  assert len({teacher_cache(stages[f"train_{name}"])[0]
              for name in ("margin_mse", "dpr_denoised", "tasb")}) == 3
  assert teacher_cache(stages["train_dpr"]) == teacher_cache(stages["train_star"]) == []
  # A retrained teacher, or another TAS-B pool, scores into a new file.
  teacher_run = f"{comparison.teacher_workdir}/run.json"
  with open(teacher_run, "w") as f:
    f.write('{"trained": "longer"}')
  retrained = {stage.name: stage for stage in comparison_stages(comparison)}
  assert teacher_cache(retrained["train_margin_mse"]) != teacher_cache(stages["train_margin_mse"])
  wider = {stage.name: stage for stage in comparison_stages(
      dataclasses.replace(comparison, tasb_pool=9))}
  assert teacher_cache(wider["train_tasb"]) != teacher_cache(retrained["train_tasb"])
  assert teacher_cache(wider["train_margin_mse"]) == teacher_cache(retrained["train_margin_mse"])
  with open(teacher_run, "w") as f:
    f.write("{}")


def test_the_table_names_each_method_and_tests_each_against_bm25_and_dpr(comparison, stages):
  comparison = dataclasses.replace(comparison, methods=("dpr", "star"))
  assert [method_label(name, {}) for name in evaluation_stages(comparison)] == [
      "dpr", "star", "bm25", "dpr + BM25", "star + BM25"]
  bm25 = stages["eval_bm25"]
  assert "--retrieval=bm25" in bm25.args and f"--bm25_dir={comparison.bm25_dir}" in bm25.args
  assert bm25.output == f"{comparison.workdir}/eval/bm25"
  assert paired_test(comparison) == PairedTest(
      baselines=("eval_bm25", "eval_dpr"),
      metrics=("answer_recall@1", "gold_paragraph_recall@1"))


@pytest.mark.parametrize("settings, message", [
    (dict(methods=("adore",)), "adore trains over the dpr method's index: name dpr before it"),
    (dict(methods=("adore", "dpr")), "name dpr before it"),
    (dict(methods=("dpr", "margin_mse"), teacher_workdir=""), "pass --teacher_workdir"),
    (dict(methods=("dpr", "margin_mse"), teacher_workdir="/nonexistent"), "no run.json"),
    (dict(methods=("dpr", "colbert")), r"unknown methods \['colbert'\]"),
    (dict(methods=("dpr", "dpr")), "named twice"),
    (dict(methods=()), "no methods"),
    (dict(block_store="/nonexistent"), "not a block store"),
])
def test_comparisons_that_cannot_run_are_refused(comparison, settings, message):
  with pytest.raises(InputError, match=message):
    comparison_stages(dataclasses.replace(comparison, **settings))

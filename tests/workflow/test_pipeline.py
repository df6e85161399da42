"""The open-QA pipeline end to end at --size=tiny with a tiny random BERT: every stage runs, the
summary holds the held-out metrics of dense and BM25 retrieval, the console carries no library
chatter, and a second run skips what is complete and reruns only what a changed setting reaches."""

import json

import pytest

from orqa_realm.workflow import open_qa
from tests.conftest import run_tiny_pipeline as pipeline

STAGES = ["blocks", "qa", "retriever", "index", "reader", "evaluate", "bm25"]


def summary_of(workdir):
  return json.loads((workdir / "summary.json").read_text())


def statuses(summary):
  return {name: stage["status"] for name, stage in summary["stages"].items()}


@pytest.fixture(scope="module")
def first_run(tiny_pipeline):
  return tiny_pipeline




def test_every_stage_runs_and_the_summary_compares_dense_with_bm25(first_run):
  workdir, result = first_run
  assert result.returncode == 0, result.stderr[-3000:]
  summary = summary_of(workdir)
  assert statuses(summary) == {name: "ran" for name in STAGES}
  assert set(summary["metrics"]) == set(open_qa.EVALUATIONS)
  dense, bm25 = summary["metrics"]["evaluate"], summary["metrics"]["bm25"]
  for metrics in (dense, bm25):
    assert metrics["num_queries"] == open_qa.TINY_EVAL_QUESTIONS
    assert metrics["num_blocks"] == summary["stages"]["blocks"]["output_identity"]["num_blocks"]
    assert 0.0 <= metrics["exact_match"] <= 1.0 and metrics["reader_step"] == 8
    assert set(metrics["answer_recall"]) == {"@1", "@5", "@20", "@100"}
  # The held-out questions are asked over the corpus that holds their paragraphs.
  assert bm25["gold_paragraph_recall"]["@20"] > 0.9
  assert dense["index_run"]["run_id"] == summary["stages"]["retriever"]["output_identity"][
      "run_id"]
  # The dense system tested against BM25 question by question, on recall@1 and exact match.
  paired = summary["paired"]["bm25"]["evaluate"]
  assert set(paired) == {"answer_recall@1", "exact_match"}
  recall = paired["answer_recall@1"]
  assert recall["difference"] == pytest.approx(
      dense["answer_recall"]["@1"] - bm25["answer_recall"]["@1"])
  assert recall["better"] + recall["worse"] + recall["equal"] == open_qa.TINY_EVAL_QUESTIONS
  assert 0 < recall["p_value"] <= 1
  assert "R@1" in result.stdout and "against bm25, question by question" in result.stdout


def test_the_console_shows_progress_not_library_logs(first_run):
  _, result = first_run
  console = result.stdout + result.stderr
  assert "checkpoint_manager.py" not in console and "Traceback" not in console
  assert "step 8/8" in console
  assert "[5/7] reader: ORQA" in console


def test_a_second_run_skips_complete_stages_and_reruns_what_a_setting_reaches(
    first_run, tiny_bert_512_dir):
  """Reruns in the shared pipeline workdir (stage paths are part of the fingerprints, so a copy
  would rerun everything); only its evaluation outputs change, which no other test reads."""
  workdir, _ = first_run
  bert_dir = tiny_bert_512_dir
  again = pipeline(workdir, bert_dir)
  assert again.returncode == 0, again.stderr[-3000:]
  assert statuses(summary_of(workdir)) == {name: "skipped" for name in STAGES}
  changed = pipeline(workdir, bert_dir, "--eval_recall_ks=1,5")
  assert changed.returncode == 0, changed.stderr[-3000:]
  summary = summary_of(workdir)
  assert statuses(summary) == dict({name: "skipped" for name in STAGES},
                                   evaluate="ran", bm25="ran")
  assert set(summary["metrics"]["evaluate"]["answer_recall"]) == {"@1", "@5"}
  assert len(list((workdir / "superseded").iterdir())) == 2

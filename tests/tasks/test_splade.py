"""SPLADE training: DPR's batch of questions and blocks, the loss (in-batch softmax of term-weight
dot products and FLOPS) against NumPy, and a trained run searched by `evaluate`."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from orqa_realm.core import parallel
from orqa_realm.data.qa import question_indices
from orqa_realm.modeling import partitioning, splade
from orqa_realm.tasks.base import StepContext
from tests.conftest import DEMO_SQUAD, REPO_ROOT, subprocess_env
from tests.tasks.tiny_splade import tiny_splade_task

MESH = parallel.make_mesh()


@pytest.fixture(scope="module")
def tiny_task(squad_block_store, tiny_bert_dir):
  return tiny_splade_task(squad_block_store.directory, tiny_bert_dir)


def test_a_batch_is_each_question_with_its_positive_then_negatives(tiny_task):
  batch = tiny_task.train_batch(1, StepContext(MESH))
  assert batch.queries.token_ids.shape == (8, 16)
  assert batch.blocks.token_ids.shape == (16, 48)
  examples = [tiny_task.examples[i]
              for i in question_indices(len(tiny_task.examples), 8, seed=0, step=1)]
  np.testing.assert_array_equal(
      batch.block_ids, [b for e in examples for b in (e.positive, *e.hard_negatives)])


def test_loss_against_numpy(tiny_task):
  batch = tiny_task.train_batch(0, StepContext(MESH))
  params = partitioning.unbox(tiny_task.init_params(jax.random.key(0)))
  loss, metrics = tiny_task.loss(params, batch, jax.random.key(0), True)
  weigh = lambda inputs: np.asarray(splade.term_weights(tiny_task.model, params, inputs),
                                    np.float64)
  queries, blocks = weigh(batch.queries), weigh(batch.blocks)
  scores = queries @ blocks.T  # [8, 16]
  total = 0.0
  for row in range(8):
    positive = 2 * row
    # A row holding the positive's block under another question is left out of the softmax.
    kept = [column for column in range(16)
            if column == positive or batch.block_ids[column] != batch.block_ids[positive]]
    logits = scores[row, kept]
    total += np.log(np.exp(logits - logits.max()).sum()) + logits.max() - scores[row, positive]
  flops = lambda weights: np.sum(np.mean(weights, axis=0) ** 2)
  expected = total / 8 + 0.01 * flops(queries) + 0.005 * flops(blocks)
  np.testing.assert_allclose(loss, expected, rtol=1e-4)
  np.testing.assert_allclose(metrics["query_flops"], flops(queries), rtol=1e-4)
  assert 0 < metrics["block_terms"] <= blocks.shape[1]


@pytest.mark.slow  # a training run and an evaluation, two subprocesses
def test_a_trained_run_is_searched_by_evaluate(squad_block_store, tiny_bert_dir, tmp_path):
  workdir = tmp_path / "splade"
  train = subprocess.run(
      [sys.executable, "-m", "orqa_realm.train", "--task=splade", f"--workdir={workdir}",
       f"--block_store={squad_block_store.directory}", f"--bert={tiny_bert_dir}",
       "--from_scratch", f"--train_qa_dataset=squad:{DEMO_SQUAD}", "--hard_negative_depth=20",
       "--query_length=16", "--block_length=48", "--batch_size=4", "--num_train_steps=2",
       "--learning_rate=1e-3", "--warmup_steps=1"],
      capture_output=True, text=True, env=subprocess_env(), cwd=REPO_ROOT, timeout=600)
  assert train.returncode == 0, train.stderr[-3000:]
  output = tmp_path / "eval"
  evaluate = subprocess.run(
      [sys.executable, "-m", "orqa_realm.evaluate", "--retrieval=splade",
       f"--block_store={squad_block_store.directory}", f"--bert={tiny_bert_dir}",
       f"--workdir={workdir}", f"--sparse_index_dir={tmp_path / 'index'}",
       f"--eval_qa_dataset=squad:{DEMO_SQUAD}", "--eval_questions=20", "--eval_recall_ks=1,5",
       f"--output_dir={output}"],
      capture_output=True, text=True, env=subprocess_env(), cwd=REPO_ROOT, timeout=600)
  assert evaluate.returncode == 0, evaluate.stderr[-3000:]
  metrics = json.loads((output / "metrics.json").read_text())
  assert metrics["splade"]["step"] == 2 and metrics["postings"] > 0
  assert 0 <= metrics["answer_recall"]["@1"] <= metrics["answer_recall"]["@5"] <= 1
  # The index records its encoder: the same run again loads it; flags the run fixes are refused.
  refused = subprocess.run(
      [sys.executable, "-m", "orqa_realm.evaluate", "--retrieval=splade",
       f"--block_store={squad_block_store.directory}", f"--bert={tiny_bert_dir}",
       f"--workdir={workdir}", "--block_length=64", f"--eval_qa_dataset=squad:{DEMO_SQUAD}",
       f"--output_dir={tmp_path / 'eval2'}"],
      capture_output=True, text=True, env=subprocess_env(), cwd=REPO_ROOT, timeout=600)
  assert refused.returncode != 0 and "--block_length" in refused.stderr

"""DeepCT training: batches of relevant blocks with their query term recall targets, the loss
against NumPy, and a trained run rewriting the store for `evaluate`."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from orqa_realm.core import parallel
from orqa_realm.data.answers import answer_hits
from orqa_realm.data.qa import QAEvaluation, question_indices
from orqa_realm.encode import deepct as deepct_encode
from orqa_realm.modeling import partitioning
from orqa_realm.tasks.base import StepContext
from tests.conftest import DEMO_SQUAD, REPO_ROOT, subprocess_env
from tests.tasks.tiny_deepct import tiny_deepct_task

MESH = parallel.make_mesh()


@pytest.fixture(scope="module")
def tiny_task(squad_block_store, tiny_bert_dir):
  return tiny_deepct_task(squad_block_store.directory, tiny_bert_dir)


def test_training_blocks_are_the_positives_with_their_questions_term_recall(tiny_task):
  # SQuAD: a question's positive is a block of its gold paragraph; each relevant block once.
  assert len(tiny_task.blocks) == len(set(tiny_task.blocks.tolist())) > 50
  assert all(0 < max(recall.values()) <= 1 for recall in tiny_task.term_recall)


def test_a_batch_holds_each_blocks_targets_at_its_words(tiny_task):
  batch = tiny_task.train_batch(1, StepContext(MESH))
  assert batch.blocks.token_ids.shape == batch.targets.shape == batch.mask.shape == (8, 48)
  rows = question_indices(len(tiny_task.blocks), 8, seed=0, step=1)
  np.testing.assert_array_equal(
      batch.blocks.token_ids,
      tiny_task.store.encode(tiny_task.blocks[rows], max_length=48).token_ids)
  for index, (row, token_ids) in enumerate(zip(rows, batch.blocks.token_ids)):
    words = tiny_task.splitter.input_words(token_ids)
    recall = tiny_task.term_recall[row]
    for position, terms in zip(words.positions, words.terms):
      assert batch.mask[index, position] == float(bool(terms))
      if terms:
        assert batch.targets[index, position] == pytest.approx(
            max(recall.get(term, 0.0) for term in terms))
  assert batch.targets.max() > 0 and batch.mask.sum() > 8


def test_loss_against_numpy(tiny_task):
  batch = tiny_task.train_batch(0, StepContext(MESH))
  params = partitioning.unbox(tiny_task.init_params(jax.random.key(0)))
  loss, metrics = tiny_task.loss(params, batch, jax.random.key(0), True)
  weights = np.asarray(tiny_task.model.apply({"params": params}, batch.blocks), np.float64)
  mask = batch.mask.astype(np.float64)
  expected = np.sum(mask * (weights - batch.targets) ** 2) / mask.sum()
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  assert metrics["words"] == mask.sum()
  np.testing.assert_allclose(tiny_task.loss_weight(batch), mask.sum())


def test_evaluation_searches_the_store_rewritten_as_evaluate_would(squad_block_store,
                                                                 tiny_bert_dir):
  evaluation = QAEvaluation(qa_dataset=f"squad:{DEMO_SQUAD}", questions=40, recall_ks=(1, 5))
  task = tiny_deepct_task(squad_block_store.directory, tiny_bert_dir, evaluation=evaluation)
  params = partitioning.unbox(task.init_params(jax.random.key(1)))
  metrics = task.evaluate(params, MESH)
  model = deepct_encode.DeepCTModel(task.config.deepct, params, task.analyzer,
                                    task.tokenizer.fingerprint, {})
  searcher, info = deepct_encode.text_searcher(
      task.store, task.tokenizer, model,
      deepct_encode.DeepCTSearch(rewrite=task.config.rewrite), MESH)
  examples = evaluation.examples()
  hits = answer_hits(searcher.search_texts([e.question for e in examples], 5).ids, task.store,
                     examples)
  assert metrics["answer_recall@1"] == pytest.approx(hits[:, 0].mean())
  assert metrics["answer_recall@5"] == pytest.approx(hits.any(axis=1).mean())
  assert metrics["terms_per_block"] == pytest.approx(info["terms_per_block"])
  assert metrics["terms_per_block"] > 0


@pytest.mark.slow  # a training run, an embedding and four evaluations
def test_a_trained_run_rewrites_the_store_for_evaluate(squad_block_store, tiny_bert_dir,
                                                        tmp_path):
  workdir = tmp_path / "deepct"
  train = subprocess.run(
      [sys.executable, "-m", "orqa_realm.train", "--task=deepct", f"--workdir={workdir}",
       f"--block_store={squad_block_store.directory}", f"--bert={tiny_bert_dir}",
       "--from_scratch", f"--train_qa_dataset=squad:{DEMO_SQUAD}", "--hard_negative_depth=20",
       "--block_length=48", "--batch_size=4", "--num_train_steps=2", "--learning_rate=1e-3",
       "--warmup_steps=1", f"--eval_qa_dataset=squad:{DEMO_SQUAD}", "--eval_questions=20",
       "--eval_recall_ks=1,5", "--eval_every_steps=2"],
      capture_output=True, text=True, env=subprocess_env(), cwd=REPO_ROOT, timeout=600)
  assert train.returncode == 0, train.stderr[-3000:]
  output = tmp_path / "eval"
  common = [sys.executable, "-m", "orqa_realm.evaluate", "--retrieval=deepct",
            f"--block_store={squad_block_store.directory}", f"--bert={tiny_bert_dir}",
            f"--workdir={workdir}", f"--deepct_index_dir={tmp_path / 'index'}",
            f"--eval_qa_dataset=squad:{DEMO_SQUAD}", "--eval_questions=20",
            "--eval_recall_ks=1,5"]
  evaluate = subprocess.run(common + [f"--output_dir={output}"], capture_output=True, text=True,
                            env=subprocess_env(), cwd=REPO_ROOT, timeout=600)
  assert evaluate.returncode == 0, evaluate.stderr[-3000:]
  metrics = json.loads((output / "metrics.json").read_text())
  assert metrics["deepct"]["step"] == 2 and metrics["term_occurrences"] >= 0
  assert 0 <= metrics["answer_recall"]["@1"] <= metrics["answer_recall"]["@5"] <= 1
  # The index records how it was rewritten: another scale is refused, not silently searched.
  refused = subprocess.run(common + ["--deepct_scale=10", f"--output_dir={tmp_path / 'eval2'}"],
                           capture_output=True, text=True, env=subprocess_env(), cwd=REPO_ROOT,
                           timeout=600)
  assert refused.returncode != 0 and "--deepct_index_dir" in refused.stderr
  # Fused with a dense index: the DeepCT run is the hybrid's sparse model, --workdir the dense's.
  dense = [f"--bert={tiny_bert_dir}", "--projection_size=0", "--block_length=32",
           "--query_length=16", "--embed_dtype=float32"]
  embedded = subprocess.run(
      [sys.executable, "-m", "orqa_realm.embed", f"--block_store={squad_block_store.directory}",
       f"--index_dir={tmp_path / 'dense'}", *dense],
      capture_output=True, text=True, env=subprocess_env(), cwd=REPO_ROOT, timeout=600)
  assert embedded.returncode == 0, embedded.stderr[-3000:]
  hybrid = subprocess.run(
      [sys.executable, "-m", "orqa_realm.evaluate", "--retrieval=hybrid", "--hybrid_sparse=deepct",
       f"--hybrid_sparse_model={workdir}", f"--deepct_index_dir={tmp_path / 'index'}",
       f"--index_dir={tmp_path / 'dense'}", f"--block_store={squad_block_store.directory}",
       *dense, f"--eval_qa_dataset=squad:{DEMO_SQUAD}", "--eval_questions=20",
       "--eval_recall_ks=1,5", f"--output_dir={tmp_path / 'hybrid'}"],
      capture_output=True, text=True, env=subprocess_env(), cwd=REPO_ROOT, timeout=600)
  assert hybrid.returncode == 0, hybrid.stderr[-3000:]
  fused = json.loads((tmp_path / "hybrid" / "metrics.json").read_text())
  assert fused["hybrid_sparse"] == "deepct" and fused["deepct"] == metrics["deepct"]
  assert 0 <= fused["answer_recall"]["@1"] <= fused["answer_recall"]["@5"] <= 1

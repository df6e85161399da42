"""Distillation: the teacher's scores are the cross-encoder's of each query's candidates, in the
batch's order; the Margin-MSE and listwise-KL losses against NumPy on a real batch; RocketQA's
denoising keeps only negatives the teacher scores below the positive minus the margin; settings
that would go unread are refused; 4 simulated devices against 1."""

import dataclasses
import re

import jax
import numpy as np
import pytest

from orqa_realm.core import parallel
from orqa_realm.core.errors import InputError
from orqa_realm.data.dpr import DPRExample
from orqa_realm.encode import runs
from orqa_realm.encode.rerank import score_pairs
from orqa_realm.modeling import partitioning, retriever
from orqa_realm.tasks.base import StepContext
from orqa_realm.tasks.pairs import TrainingPairs
from orqa_realm.tasks.teacher import TeacherSettings, denoise
from tests.tasks.tiny_cross_encoder import tiny_distill_task
from tests.tasks.tiny_dpr import tiny_ance_task, tiny_dpr_task

MESH = parallel.make_mesh()


@pytest.fixture(scope="module")
def tiny_task(squad_block_store, tiny_bert_dir, tiny_cross_encoder_run, small_squad,
              tmp_path_factory):
  cache = str(tmp_path_factory.mktemp("teacher") / "scores.npz")
  return tiny_distill_task(squad_block_store.directory, tiny_bert_dir, tiny_cross_encoder_run,
                           small_squad,
                           teacher=TeacherSettings(workdir=tiny_cross_encoder_run, scores=cache))


def test_teacher_scores_are_the_cross_encoders_in_batch_order(tiny_task, squad_block_store,
                                                              tiny_cross_encoder_run):
  batch = tiny_task.train_batch(2, StepContext(MESH))
  assert batch.teacher_scores.shape == (8, 4)
  teacher = runs.restore_cross_encoder_run(tiny_cross_encoder_run, None, MESH)
  indices, examples = tiny_task.step_examples(2, slice(None))
  expected = score_pairs(teacher.params, teacher.config, squad_block_store,
                         tiny_task.tokenizer.tokenize([e.question for e in examples]),
                         batch.block_ids.reshape(8, 4), mesh=MESH)
  np.testing.assert_allclose(batch.teacher_scores, expected, rtol=1e-4, atol=1e-5)
  half = tiny_task.train_batch(2, StepContext(MESH, slice(4, 8)))
  np.testing.assert_array_equal(half.teacher_scores, batch.teacher_scores[4:])
  # The cache is read back by the next run of the same pairs and teacher.
  again = tiny_distill_task(squad_block_store.directory, tiny_task.config.source.bert,
                            tiny_cross_encoder_run, tiny_task.config.pairs.qa_dataset,
                            teacher=tiny_task.config.teacher)
  np.testing.assert_array_equal(again.teacher_scores, tiny_task.teacher_scores)


@pytest.mark.parametrize("loss", ["margin_mse", "listwise_kl"])
def test_loss_equals_numpy_on_a_real_batch(tiny_task, loss):
  task = dataclasses.replace(tiny_task.config, loss=loss, temperature=2.0, in_batch_weight=0.5)
  tiny_task.config, saved = task, tiny_task.config
  try:
    params = partitioning.unbox(tiny_task.init_params(jax.random.key(0)))
    batch = tiny_task.train_batch(0, StepContext(MESH))
    # The tiny teacher barely separates its candidates (its scores agree to 1e-5): the loss is
    # checked on scores that differ.
    batch = batch._replace(teacher_scores=np.random.default_rng(0).normal(
        size=batch.teacher_scores.shape).astype(np.float32))
    found, metrics = tiny_task.loss(params, batch, jax.random.key(1), deterministic=True)
  finally:
    tiny_task.config = saved
  queries, blocks = retriever.DualEncoder(task.retriever).apply(
      {"params": params}, batch.queries, batch.blocks, True)
  queries, blocks = np.asarray(queries, np.float64), np.asarray(blocks, np.float64)
  scale = task.retriever.score_scale
  student = scale * np.einsum("qd,qcd->qc", queries, blocks.reshape(8, 4, -1))
  teacher = batch.teacher_scores.astype(np.float64)
  if loss == "margin_mse":
    distill = np.mean([((student[q, 0] - student[q, j]) - (teacher[q, 0] - teacher[q, j])) ** 2
                       for q in range(8) for j in range(1, 4)])
  else:
    t = teacher / 2.0
    p = np.exp(t - t.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    log_q = student - np.log(np.exp(student).sum(1, keepdims=True))
    distill = np.mean(np.sum(p * (np.log(p) - log_q), axis=1))
  logits = scale * queries @ blocks.T
  in_batch = []
  for i, row in enumerate(logits):
    kept = [j for j in range(len(row))
            if j == 4 * i or batch.block_ids[j] != batch.block_ids[4 * i]]
    in_batch.append(np.log(np.exp(row[kept]).sum()) - row[4 * i])
  np.testing.assert_allclose(metrics["distill_loss"], distill, rtol=1e-4)
  np.testing.assert_allclose(found, distill + 0.5 * np.mean(in_batch), rtol=1e-4)


def test_denoising_drops_negatives_scored_near_the_positive():
  examples = [DPRExample("q0", 10, (1, 2, 3, 4, 5, 6)), DPRExample("q1", 20, (7, 8, 9, 11, 12, 13))]
  scores = np.array([[5.0, 4.9, 1.0, 6.0, 0.5, 2.0, 0.0],  # pool scores of 1..6
                     [1.0, 3.0, 2.0, 0.9, 1.5, 0.8, 4.0]])
  taught = denoise(examples, scores, margin=0.5, num_negatives=2)
  # q0: 1 (4.9 > 4.5) and 3 (6.0) dropped; first two survivors 2, 4.
  assert taught.examples[0].hard_negatives == (2, 4)
  np.testing.assert_array_equal(taught.scores[0], [5.0, 1.0, 0.5])
  # q1 (positive 1.0, cut 0.5): no survivor; the two lowest-scored of the pool, 12 and 9.
  assert taught.examples[1].hard_negatives == (12, 9)
  assert taught.num_dropped == 2 + 6 and taught.num_kept_noisy == 2


def test_denoised_dpr_negatives_obey_the_margin(squad_block_store, tiny_bert_dir,
                                                 tiny_cross_encoder_run, small_squad, capsys):
  task = tiny_dpr_task(squad_block_store.directory, tiny_bert_dir, teacher=TeacherSettings(
      workdir=tiny_cross_encoder_run, denoise_margin=0.0, denoise_pool=6),
                       pairs=TrainingPairs(qa_dataset=small_squad, negative_depth=20))
  assert task.teacher_scores.shape == (len(task.examples), 3)
  kept_noisy = task.teacher_scores[:, 1:] > task.teacher_scores[:, :1]
  # Only queries with too few survivors keep a negative above the margin.
  assert kept_noisy.mean() < 0.5
  # The count dropped is on the console, whatever the log's verbosity.
  pools = len(task.examples) * 6
  assert re.search(rf"denoising dropped \d+ of {pools} mined negatives \(\d+ kept above",
                   capsys.readouterr().out)


def test_settings_that_would_go_unread_are_refused(squad_block_store, tiny_bert_dir,
                                                   tiny_cross_encoder_run, small_squad):
  store = squad_block_store.directory
  with pytest.raises(InputError, match="pass --teacher_workdir"):
    tiny_distill_task(store, tiny_bert_dir, "", small_squad)
  with pytest.raises(InputError, match="only to denoise its negatives"):
    tiny_dpr_task(store, tiny_bert_dir, teacher=TeacherSettings(workdir=tiny_cross_encoder_run))
  with pytest.raises(InputError, match="--task=ance mines its negatives"):
    tiny_ance_task(store, tiny_bert_dir, teacher=TeacherSettings(workdir=tiny_cross_encoder_run))
  with pytest.raises(InputError, match="--denoise_margin needs a teacher"):
    TeacherSettings(denoise_margin=1.0).check()
  with pytest.raises(InputError, match="--denoise_pool is read with --denoise_margin only"):
    TeacherSettings(workdir="/r", denoise_pool=9).check()

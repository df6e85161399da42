"""TAS-B: a batch's queries come from one k-means topic; balanced margin sampling spreads the
chosen pairs' teacher margins evenly over the bins; the pair and in-batch teacher scores are the
cross-encoder's; the loss (pairwise + weighted in-batch Margin-MSE) against NumPy."""

import jax
import numpy as np
import pytest

from orqa_realm.core import parallel
from orqa_realm.encode import runs
from orqa_realm.encode.rerank import score_pairs
from orqa_realm.modeling import retriever
from orqa_realm.tasks.base import StepContext
from orqa_realm.tasks.tasb import balanced_negatives, topic_batch
from tests.tasks.tiny_cross_encoder import tiny_tasb_task

MESH = parallel.make_mesh()


def test_topic_batches_come_from_one_cluster_topped_up_when_small():
  clusters = [np.arange(0, 20), np.arange(20, 23), np.arange(23, 40)]
  for seed in range(20):
    batch = topic_batch(clusters, 8, np.random.default_rng(seed))
    assert len(set(batch.tolist())) == 8
    homes = {next(c for c, members in enumerate(clusters) if i in members) for i in batch}
    # A cluster of 20 or 17 gives the whole batch; the cluster of 3 is topped up from another.
    assert len(homes) == 1 or (1 in homes and len(homes) == 2)


def test_balanced_sampling_spreads_margins_over_the_bins():
  rng = np.random.default_rng(0)
  # Each query's pool: margins skewed to low values (most of any pool lies in the first bin).
  margins = np.concatenate([rng.uniform(0, 1, (2000, 8)), rng.uniform(0, 10, (2000, 2))], axis=1)
  edges = np.linspace(0, 10, 11)
  chosen = balanced_negatives(margins, edges, np.random.default_rng(1))
  picked = margins[np.arange(2000), chosen]
  counts = np.histogram(picked, edges)[0]
  pool_counts = np.histogram(margins, edges)[0]
  # The pools put 82% of the margins in the first bin; the chosen pairs about a tenth in each
  # (the first bin a little more: a bin a pool has no margin in falls back to the nearest).
  assert pool_counts[0] > 0.8 * margins.size
  assert counts[0] < 0.3 * len(picked) and counts[1:].min() > 0.5 * len(picked) / 10


@pytest.fixture(scope="module")
def tiny_task(squad_block_store, tiny_bert_dir, tiny_cross_encoder_run, small_squad):
  return tiny_tasb_task(squad_block_store.directory, tiny_bert_dir, tiny_cross_encoder_run,
                        small_squad)


def test_batch_pairs_and_teacher_scores(tiny_task, squad_block_store, tiny_cross_encoder_run):
  batch = tiny_task.train_batch(3, StepContext(MESH))
  indices, negatives = tiny_task.step_pairs(3)
  assert batch.block_ids.shape == (16,) and batch.teacher_in_batch.shape == (8, 8)
  np.testing.assert_array_equal(batch.block_ids[::2],
                                [tiny_task.examples[i].positive for i in indices])
  np.testing.assert_array_equal(batch.block_ids[1::2], [
      tiny_task.examples[i].hard_negatives[n] for i, n in zip(indices, negatives)])
  np.testing.assert_array_equal(batch.teacher_scores[:, 0], tiny_task.teacher_scores[indices, 0])
  teacher = runs.restore_cross_encoder_run(tiny_cross_encoder_run, None, MESH)
  expected = score_pairs(teacher.params, teacher.config, squad_block_store,
                         [tiny_task.question_ids[i] for i in indices],
                         np.tile(batch.block_ids[::2], (8, 1)), mesh=MESH)
  np.testing.assert_allclose(batch.teacher_in_batch, expected, rtol=1e-4, atol=1e-5)
  # The batch's queries share a k-means cluster (the clusters of 627 queries hold 8 or more).
  home = [c for c, members in enumerate(tiny_task.clusters) if indices[0] in members][0]
  if len(tiny_task.clusters[home]) >= 8:
    assert set(indices.tolist()) <= set(tiny_task.clusters[home].tolist())
  half = tiny_task.train_batch(3, StepContext(MESH, slice(4, 8)))
  np.testing.assert_array_equal(half.block_ids, batch.block_ids[8:])
  np.testing.assert_allclose(half.teacher_in_batch, batch.teacher_in_batch[4:], rtol=1e-5)


def test_loss_equals_numpy_on_a_real_batch(tiny_task):
  params = tiny_task.init_params(jax.random.key(0))
  batch = tiny_task.train_batch(0, StepContext(MESH))
  rng = np.random.default_rng(2)  # the tiny teacher's scores barely differ: spread them
  batch = batch._replace(teacher_scores=rng.normal(size=(8, 2)).astype(np.float32),
                         teacher_in_batch=rng.normal(size=(8, 8)).astype(np.float32))
  loss, metrics = jax.jit(lambda p, b: tiny_task.loss(p, b, jax.random.key(1), True))(params,
                                                                                      batch)
  queries, blocks = retriever.DualEncoder(tiny_task.config.retriever).apply(
      {"params": params}, batch.queries, batch.blocks, True)
  queries, blocks = np.asarray(queries, np.float64), np.asarray(blocks, np.float64)
  scale, teacher = tiny_task.config.retriever.score_scale, batch.teacher_scores
  student = scale * np.einsum("qd,qcd->qc", queries, blocks.reshape(8, 2, -1))
  pairwise = np.mean(((student[:, 0] - student[:, 1]) - (teacher[:, 0] - teacher[:, 1])) ** 2)
  s, t, ids = scale * queries @ blocks[::2].T, batch.teacher_in_batch, batch.block_ids[::2]
  in_batch = np.mean([((s[i, i] - s[i, j]) - (t[i, i] - t[i, j])) ** 2
                      for i in range(8) for j in range(8) if ids[j] != ids[i]])
  np.testing.assert_allclose(metrics["pairwise_margin_mse"], pairwise, rtol=1e-4)
  np.testing.assert_allclose(loss, pairwise + in_batch, rtol=1e-4)

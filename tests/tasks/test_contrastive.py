"""Contriever and SimCSE: the loss (in-batch softmax of each query view against every key view)
against NumPy, SimCSE's two views differing only by dropout, held-out blocks kept out of
training, bad settings refused, a short run that learns; MoCo's loss against NumPy, and its
momentum encoder and queue advancing and resuming exactly from a checkpoint."""

import dataclasses
import functools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orqa_realm.core import parallel, run_directory
from orqa_realm.core.errors import InputError
from orqa_realm.modeling import partitioning
from orqa_realm.tasks.base import StepContext
from orqa_realm.tasks.contrastive import ContrieverConfig, HeldOutBlocks, moco_loss
from orqa_realm.training import loop
from orqa_realm.tasks.spider import SpiderConfig
from tests.tasks.tiny_contrastive import tiny_contrastive_task, tiny_spider_task

MESH = parallel.make_mesh()


@pytest.fixture(scope="module", params=["contriever", "simcse"])
def tiny_task(request, squad_block_store, tiny_bert_dir):
  return tiny_contrastive_task(request.param, squad_block_store.directory, tiny_bert_dir)


def test_loss_against_numpy(tiny_task):
  batch = tiny_task.train_batch(0, StepContext(MESH))
  params = partitioning.unbox(tiny_task.init_params(jax.random.key(0)))
  loss, metrics = tiny_task.loss(params, batch, jax.random.key(0), True)
  queries, keys = (np.asarray(x, np.float64) for x in tiny_task.model.apply(
      {"params": params}, batch.queries, batch.blocks, True))
  logits = tiny_task.config.retriever.score_scale * queries @ keys.T
  log_p = logits - logits.max(1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
  np.testing.assert_allclose(loss, -np.diag(log_p).mean(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(metrics["accuracy"],
                             (logits.argmax(1) == np.arange(len(logits))).mean())


def test_simcse_views_differ_only_by_dropout(squad_block_store, tiny_bert_dir):
  task = tiny_contrastive_task("simcse", squad_block_store.directory, tiny_bert_dir)
  batch = task.train_batch(0, StepContext(MESH))
  params = partitioning.unbox(task.init_params(jax.random.key(0)))
  length = batch.queries.token_ids.shape[1]
  np.testing.assert_array_equal(batch.queries.token_ids, batch.blocks.token_ids[:, :length])
  evaluated = task.model.apply({"params": params}, batch.queries, batch.queries, True)
  np.testing.assert_allclose(evaluated[0], evaluated[1], atol=1e-6)
  trained = task.model.apply({"params": params}, batch.queries, batch.queries, False,
                             rngs={"dropout": jax.random.key(1)})
  assert np.abs(np.asarray(trained[0]) - np.asarray(trained[1])).max() > 1e-3


def test_held_out_blocks_are_not_trained_on(tiny_task):
  trained = {int(block) for step in range(20)
             for block in tiny_task.train_sampler.batch(step).block_indices}
  held_out = set(tiny_task.heldout_blocks.tolist())
  assert held_out and not trained & held_out
  assert len(list(tiny_task.eval_batches())) == 2


@pytest.mark.parametrize("field, value, message", [
    ("min_crop_ratio", 0.6, "exceeds --contriever_max_crop_ratio"),
    ("delete_prob", 1.5, "must be in"),
    ("moco_momentum", 1.0, "must be in"),
])
def test_bad_settings_are_refused(field, value, message):
  with pytest.raises(InputError, match=message):
    dataclasses.replace(ContrieverConfig(), **{field: value})
  with pytest.raises(InputError, match="must be in"):
    HeldOutBlocks(fraction=1.0)


def test_a_short_run_learns(squad_block_store, tiny_bert_dir, tmp_path):
  """Contriever's held-out loss falls over 30 steps of the tiny model."""
  task = tiny_contrastive_task("contriever", squad_block_store.directory, tiny_bert_dir,
                               batch_size=16)
  loop.train(task, loop.TrainConfig(
      workdir=str(tmp_path / "run"), num_train_steps=30, batch_size=16, learning_rate=3e-3,
      warmup_steps=0, eval_every_steps=30, log_every_steps=30, async_checkpoints=False))
  with open(tmp_path / "run" / "metrics.jsonl", encoding="utf-8") as f:
    evaluations = [record for record in map(json.loads, f) if "eval_loss" in record]
  assert evaluations[-1]["eval_loss"] < evaluations[0]["eval_loss"] - 0.1, evaluations


def test_moco_loss_against_numpy():
  rng = np.random.default_rng(0)
  queries, keys = rng.normal(size=(4, 8)), rng.normal(size=(4, 8))
  queue = rng.normal(size=(12, 8))
  loss, accuracy = moco_loss(*(jnp.asarray(x, jnp.float32) for x in (queries, keys, queue)), 2.0)
  logits = 2.0 * np.concatenate([np.sum(queries * keys, 1, keepdims=True), queries @ queue.T],
                                axis=1)
  log_p = logits - logits.max(1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
  np.testing.assert_allclose(loss, -log_p[:, 0].mean(), rtol=1e-5)
  np.testing.assert_allclose(accuracy, (logits.argmax(1) == 0).mean())


def test_moco_queue_must_hold_whole_batches(squad_block_store, tiny_bert_dir):
  with pytest.raises(InputError, match="not a multiple of --batch_size=8"):
    tiny_contrastive_task("contriever", squad_block_store.directory, tiny_bert_dir,
                          moco_queue_size=20)


def train_moco(store, bert_dir, workdir, steps):
  task = tiny_contrastive_task("contriever", store, bert_dir, moco_queue_size=24,
                               moco_momentum=0.9)
  return task, loop.train(task, loop.TrainConfig(
      workdir=workdir, num_train_steps=steps, batch_size=8, learning_rate=1e-3, warmup_steps=0,
      eval_every_steps=0, log_every_steps=1, checkpoint_every_steps=2, keep_checkpoints=2,
      async_checkpoints=False))


def test_moco_state_advances_and_resumes_exactly(squad_block_store, tiny_bert_dir, tmp_path):
  """The queue takes each step's keys in turn and the key encoder follows the encoder; a run
  resumed from its checkpoint at step 2 ends with the state of one that never stopped."""
  store, workdir = squad_block_store.directory, str(tmp_path / "run")
  task, one = train_moco(store, tiny_bert_dir, str(tmp_path / "one"), 1)
  initial_queue = np.asarray(task.init_task_state(
      partitioning.unbox(task.init_params(jax.random.key(0)))).queue)
  np.testing.assert_allclose(np.linalg.norm(initial_queue, axis=1), 1.0, rtol=1e-5)
  assert int(one.task_state.position) == 8
  np.testing.assert_allclose(one.task_state.queue[8:], initial_queue[8:], rtol=1e-6)
  assert not np.allclose(one.task_state.queue[:8], initial_queue[:8])

  _, straight = train_moco(store, tiny_bert_dir, workdir, 4)
  assert int(straight.task_state.position) == 8  # 32 keys through a queue of 24
  # The key encoder moves towards the encoder as it was before each step.
  initial = partitioning.unbox(task.init_params(jax.random.key(0)))
  moved = lambda key, before: jax.tree.map(lambda k, p: 0.9 * k + 0.1 * p, key, before)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-7),
               one.task_state.key_params, moved(initial, initial))

  shutil.rmtree(os.path.join(run_directory.checkpoint_dir(workdir), "4"))
  _, resumed = train_moco(store, tiny_bert_dir, workdir, 4)
  jax.tree.map(np.testing.assert_array_equal, resumed, straight)


@pytest.fixture(scope="module")
def tiny_spider(squad_block_store, tiny_bert_dir):
  return tiny_spider_task(squad_block_store.directory, tiny_bert_dir)


def test_spider_loss_against_numpy(tiny_spider):
  """DPR's in-batch softmax over positives and same-document negatives; a block that is a
  query's positive is never also counted as its negative."""
  batch = tiny_spider.train_batch(0, StepContext(MESH))
  batch = batch._replace(block_ids=batch.block_ids.copy())
  batch.block_ids[3] = batch.block_ids[0]  # query 1's negative: query 0's positive
  params = partitioning.unbox(tiny_spider.init_params(jax.random.key(0)))
  loss, _ = tiny_spider.loss(params, batch, jax.random.key(0), True)
  queries, blocks = (np.asarray(x, np.float64) for x in tiny_spider.model.apply(
      {"params": params}, batch.queries, batch.blocks, True))
  logits = tiny_spider.config.retriever.score_scale * queries @ blocks.T  # [8, 16]
  logits[0, 3] = -np.inf  # the copy of query 0's positive
  positives = 2 * np.arange(8)
  expected = np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(8), positives])
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_spider_groups_must_be_known():
  with pytest.raises(InputError, match="'document' or 'title'"):
    SpiderConfig(group_by="article")

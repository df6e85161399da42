"""Contriever and SimCSE: the loss (in-batch softmax of each query view against every key view)
against NumPy, SimCSE's two views differing only by dropout, held-out blocks kept out of
training, bad settings refused, and a short run that learns."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from orqa_realm.core import parallel
from orqa_realm.core.errors import InputError
from orqa_realm.modeling import partitioning
from orqa_realm.tasks.base import StepContext
from orqa_realm.tasks.contrastive import ContrieverConfig
from orqa_realm.training import loop
from tests.tasks.tiny_contrastive import tiny_contrastive_task

MESH = parallel.make_mesh()


@pytest.fixture(scope="module", params=["contriever", "simcse"])
def tiny_task(request, squad_block_store, tiny_bert_dir):
  return tiny_contrastive_task(request.param, squad_block_store.directory, tiny_bert_dir)


def test_loss_against_numpy(tiny_task):
  batch = tiny_task.train_batch(0, StepContext(MESH))
  params = partitioning.unbox(tiny_task.init_params(jax.random.key(0)))
  loss, metrics = tiny_task.loss(params, batch, jax.random.key(0), True)
  queries, keys = (np.asarray(x, np.float64) for x in tiny_task.model.apply(
      {"params": params}, batch.queries, batch.keys, True))
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
  np.testing.assert_array_equal(batch.queries.token_ids, batch.keys.token_ids[:, :length])
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
    ("heldout_fraction", 1.0, "must be in"),
])
def test_bad_settings_are_refused(field, value, message):
  with pytest.raises(InputError, match=message):
    dataclasses.replace(ContrieverConfig(), **{field: value})


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

"""RocketQAv2's joint training: the ranker starts from the cross-encoder run; the loss is
KL(retriever || ranker) over each query's list plus the ranker's listwise loss, against NumPy,
with gradients reaching both models; the joint run is a retriever for `embed`/`evaluate` and a
cross-encoder for reranking."""

import jax
import numpy as np
import pytest

from orqa_realm.core import parallel
from orqa_realm.encode import runs
from orqa_realm.modeling import partitioning, retriever
from orqa_realm.modeling.cross_encoder import CrossEncoder
from orqa_realm.tasks.base import StepContext
from orqa_realm.training import loop
from tests.tasks.tiny_cross_encoder import tiny_rocketqa_task

MESH = parallel.make_mesh()


@pytest.fixture(scope="module")
def tiny_task(squad_block_store, tiny_bert_dir, tiny_cross_encoder_run, small_squad):
  return tiny_rocketqa_task(squad_block_store.directory, tiny_bert_dir, tiny_cross_encoder_run,
                            small_squad)


def test_joint_loss_equals_numpy_and_reaches_both_models(tiny_task, tiny_cross_encoder_run):
  params = tiny_task.warm_start(partitioning.unbox(tiny_task.init_params(jax.random.key(0))),
                                MESH)
  ranker = runs.restore_cross_encoder_run(tiny_cross_encoder_run, None, MESH)
  for found, expected in zip(jax.tree.leaves(params["ranker"]), jax.tree.leaves(ranker.params)):
    np.testing.assert_array_equal(found, expected)
  # Spread the ranker's scores (the tiny one barely separates candidates).
  params["ranker"]["score"]["kernel"] = params["ranker"]["score"]["kernel"] * 300
  batch = tiny_task.train_batch(1, StepContext(MESH))
  assert batch.pairs.token_ids.shape[:2] == (8, 4)
  (loss, metrics), grads = jax.jit(jax.value_and_grad(
      lambda p, b: tiny_task.loss(p, b, jax.random.key(1), True), has_aux=True))(params, batch)
  queries, blocks = retriever.DualEncoder(tiny_task.config.retriever).apply(
      {"params": {k: v for k, v in params.items() if k != "ranker"}}, batch.queries,
      batch.blocks, True)
  de = np.einsum("qd,qcd->qc", np.asarray(queries, np.float64),
                 np.asarray(blocks, np.float64).reshape(8, 4, -1))
  ce = np.asarray(CrossEncoder(ranker.config).apply({"params": params["ranker"]}, batch.pairs),
                  np.float64)
  log_softmax = lambda x: x - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True)) - (
      x.max(1, keepdims=True))
  p_de = np.exp(log_softmax(de))
  kl = np.mean(np.sum(p_de * (log_softmax(de) - log_softmax(ce)), axis=1))
  supervised = np.mean(-log_softmax(ce)[:, 0])
  np.testing.assert_allclose(metrics["listwise_kl"], kl, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(loss, kl + supervised, rtol=1e-4)
  norm = lambda tree: float(np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(tree))))
  assert norm(grads["ranker"]) > 0 and norm({k: v for k, v in grads.items() if k != "ranker"}) > 0


@pytest.mark.slow  # a training run: CI runs it in its second step
def test_a_joint_run_is_a_retriever_and_a_reranker(tiny_task, tmp_path):
  workdir = str(tmp_path / "joint")
  state = loop.train(tiny_task, loop.TrainConfig(workdir=workdir, num_train_steps=1,
                                                 batch_size=8, async_checkpoints=False))
  assert runs.open_retriever_run(workdir).task == "rocketqav2"
  ranker = runs.restore_cross_encoder_run(workdir, None, MESH)
  for found, trained in zip(jax.tree.leaves(ranker.params),
                            jax.tree.leaves(state.params["ranker"])):
    np.testing.assert_array_equal(found, trained)

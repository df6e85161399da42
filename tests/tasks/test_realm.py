"""REALM: the null document first and the source document never among the candidates, gradients
reaching both retriever towers and the knowledge-augmented encoder, 4 simulated devices equal to
one, a refresh mid-training switched to with its staleness logged, and ORQA fine-tuning started
from a REALM run."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orqa_realm.core import checkpoints, parallel, run_directory
from orqa_realm.data.qa import question_indices
from orqa_realm.encode import runs
from orqa_realm.encode.embedding import EmbedSettings, IndexConfig, embed_and_publish
from orqa_realm.index.handle import IndexHandle, open_index
from orqa_realm.index.storage import IndexRoot
from orqa_realm.modeling import partitioning
from orqa_realm.modeling import reader as reader_lib
from orqa_realm.modeling import retriever
from orqa_realm.modeling import losses
from orqa_realm.modeling.losses import REALMQueryScores
from orqa_realm.modeling.mlm import KNOWLEDGE_ENCODER
from orqa_realm.tasks.base import StepContext
from orqa_realm.tasks.realm import heldout_metrics
from orqa_realm.training import loop
from tests.conftest import REPO_ROOT, subprocess_env
from tests.index.hold_batch import assert_switched_with_staleness, train_through_a_refresh
from tests.tasks.sharding import run_on_four_devices
from tests.tasks.tiny_orqa import tiny_orqa_task
from tests.tasks.tiny_realm import tiny_realm_task

MESH = parallel.make_mesh()


@pytest.fixture(scope="module")
def tiny_task(salient_squad_store, tiny_bert_dir):
  return tiny_realm_task(salient_squad_store.directory, tiny_bert_dir)


@pytest.fixture(scope="module")
def tiny_params(tiny_task):
  return tiny_task.init_params(jax.random.key(0))


def query_embeddings(task, params, batch):
  return np.asarray(retriever.DualEncoder(task.config.retriever).apply(
      {"params": params}, batch.queries, method=retriever.DualEncoder.embed_queries))


def test_null_document_first_and_the_source_document_never_retrieved(tiny_task, tiny_params,
                                                                      tmp_path):
  task, store = tiny_task, tiny_task.store
  documents = np.asarray(store.document_indices())
  queries = task.examples.batch(4, 8)
  # An index in which each query's own document is what it matches best: a retriever that
  # kept it would return it first.
  probe = task.train_batch(4, StepContext(
      MESH, params=tiny_params, index=random_index(task, tmp_path / "probe")))
  embeddings = np.random.default_rng(0).normal(size=(len(store), 16)).astype(np.float32)
  for query, embedding in zip(queries, query_embeddings(task, tiny_params, probe)):
    embeddings[documents == query.document] += 10 * embedding
  root = IndexRoot(str(tmp_path / "index"))
  root.publish(embeddings, store_fingerprint=store.fingerprint, checkpoint_step=0)
  batch = task.train_batch(4, StepContext(MESH, params=tiny_params,
                                          index=open_index(root.latest(), store)))

  assert (batch.candidates[:, 0] == -1).all()
  for query, candidates, embedding in zip(queries, batch.candidates,
                                          query_embeddings(task, tiny_params, batch)):
    retrieved = candidates[1:]
    assert not (documents[retrieved] == query.document).any()
    # The best k - 1 of the others, recomputed in NumPy.
    scores = embeddings @ embedding
    scores[documents == query.document] = -np.inf
    np.testing.assert_array_equal(retrieved, np.argsort(-scores, kind="stable")[:3])
  # The null document's input is [CLS] query [SEP] [SEP]; a retrieved one's holds its block.
  lengths = batch.knowledge_inputs.input_mask.sum(-1)  # [batch, k]
  assert (lengths[:, 0] == batch.queries.input_mask.sum(-1) + 1).all()
  assert (lengths[:, 1:] > lengths[:, :1]).all()


def random_index(task, directory):
  root = IndexRoot(str(directory))
  embeddings = np.random.default_rng(1).normal(size=(len(task.store), 16)).astype(np.float32)
  root.publish(embeddings, store_fingerprint=task.store.fingerprint, checkpoint_step=0)
  return open_index(root.latest(), task.store)


def test_heldout_metrics_against_numpy():
  rng = np.random.default_rng(0)
  num_masks = np.array([2.0, 1.0, 3.0, 4.0])
  scores = REALMQueryScores(
      log_likelihood=-rng.uniform(1, 5, 4) * num_masks,
      null_log_likelihood=-rng.uniform(1, 5, 4) * num_masks,
      correct=np.array([1.0, 0.0, 2.0, 1.0]), null_correct=np.array([0.0, 0.0, 1.0, 1.0]),
      num_masks=num_masks, top_retrieved_log_likelihood=np.zeros(4),
      null_probability=np.zeros(4))
  metrics = heldout_metrics(scores)
  per_query = (scores.log_likelihood - scores.null_log_likelihood) / num_masks
  assert metrics["heldout_loss"] == pytest.approx(-scores.log_likelihood.sum() / 10)
  assert metrics["heldout_null_loss"] == pytest.approx(-scores.null_log_likelihood.sum() / 10)
  assert metrics["heldout_masked_accuracy"] == pytest.approx(0.4)
  assert metrics["heldout_null_masked_accuracy"] == pytest.approx(0.2)
  assert metrics["heldout_retrieval_utility"] == pytest.approx(per_query.mean())
  assert metrics["heldout_retrieval_utility_ci95"] == pytest.approx(
      1.96 * np.sqrt(np.sum((per_query - per_query.mean()) ** 2) / 3) / 2)


def test_held_out_sentences_are_scored_through_the_index(tiny_task, tiny_params, tmp_path):
  """Evaluation reads held-out documents' sentences only, retrieves their candidates from the
  index training uses, and scores the null document as the knowledge encoder reads it."""
  task = tiny_task
  documents = lambda examples: {task.store.document_index(int(block))
                                for block in examples.units.blocks}
  assert documents(task.eval_examples) and not documents(task.examples) & documents(
      task.eval_examples)
  index = random_index(task, tmp_path)
  params = jax.device_put(tiny_params)
  metrics = task.evaluate(params, MESH, index)
  assert task.evaluate(params, MESH, None) == {}
  # The null-document loss, computed directly from the knowledge encoder's logits, each
  # held-out sentence once (the batches cycle through the held-out pool).
  totals, seen = [], set()
  for step in range(task.config.eval_batches):
    batch = task.batch_of(task.eval_examples.batch(step, 8), params, index, MESH)
    inputs = type(batch.knowledge_inputs)(*(array[:, 0] for array in batch.knowledge_inputs))
    logits = np.asarray(task.knowledge_model.apply(
        {"params": tiny_params[KNOWLEDGE_ENCODER]}, inputs, batch.mask_positions), np.float64)
    log_p = logits - logits.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_p, batch.targets[..., None], -1)[..., 0]
    units = question_indices(len(task.eval_examples), 8, seed=task.eval_examples.seed, step=step)
    for row, unit in enumerate(units):
      if unit not in seen:
        seen.add(unit)
        totals.append(picked[row][batch.target_mask[row]])
  np.testing.assert_allclose(metrics["heldout_null_loss"], -np.concatenate(totals).mean(),
                             rtol=1e-5)
  assert metrics["heldout_retrieval_utility_ci95"] > 0
  assert np.isfinite(metrics["heldout_loss"])


def test_without_the_null_document_the_marginal_is_over_retrieved_documents(
    salient_squad_store, tiny_bert_dir, tiny_task, tiny_params, tmp_path):
  batch = tiny_task.train_batch(0, StepContext(MESH, params=tiny_params,
                                               index=random_index(tiny_task, tmp_path)))
  no_null = tiny_realm_task(salient_squad_store.directory, tiny_bert_dir, null_document=False)
  rng = jax.random.key(0)
  retrieval_logits, mlm_logits = tiny_task.logits(tiny_params, batch, rng, True)
  scores = no_null.query_scores(tiny_params, batch, rng, True)
  retrieved_only = losses.realm_query_scores(retrieval_logits[:, 1:], mlm_logits[:, 1:],
                                             batch.targets, batch.target_mask)
  np.testing.assert_allclose(scores.log_likelihood, retrieved_only.log_likelihood, rtol=1e-5)
  assert float(np.max(scores.null_probability)) == 0.0
  # The null reading is still scored (the held-out baseline), as with the null document on.
  np.testing.assert_allclose(scores.null_log_likelihood, tiny_task.query_scores(
      tiny_params, batch, rng, True).null_log_likelihood, rtol=1e-6)


@pytest.mark.slow  # over half a minute: CI runs it in its second step
def test_gradients_reach_both_towers_and_the_knowledge_encoder(tiny_task, tiny_params, tmp_path):
  batch = tiny_task.train_batch(0, StepContext(MESH, params=tiny_params,
                                               index=random_index(tiny_task, tmp_path)))
  loss_and_grads = jax.jit(lambda params, batch: jax.value_and_grad(tiny_task.loss, has_aux=True)(
      params, batch, jax.random.key(0), False))
  (loss, metrics), grads = loss_and_grads(tiny_params, batch)
  assert np.isfinite(float(loss)) and float(loss) > 0
  for part in ("query_encoder", "block_encoder", KNOWLEDGE_ENCODER):
    norm = np.sqrt(sum(float(jnp.sum(g ** 2)) for g in jax.tree.leaves(grads[part])))
    assert norm > 0, part
  assert 0 < float(metrics["null_probability"]) < 1


@pytest.mark.slow  # over a minute: CI runs it in its second step
def test_four_devices_equal_one(salient_squad_store, tiny_bert_dir):
  found = run_on_four_devices("tests.tasks.sharded_realm_check", salient_squad_store.directory,
                              tiny_bert_dir)
  np.testing.assert_allclose(found["loss_four"], found["loss_one"], rtol=1e-6)
  np.testing.assert_allclose(found["utility_four"], found["utility_one"], rtol=1e-5, atol=1e-6)
  assert found["grad_difference"] <= 1e-5 * found["grad_scale"]


@pytest.mark.slow
def test_a_refresh_mid_training_is_switched_to_with_its_staleness_logged(tiny_task, tmp_path):
  root, logged = train_through_a_refresh(tiny_task, tmp_path)
  assert_switched_with_staleness(root, logged)
  for entry in logged:
    assert np.isfinite(entry["retrieval_utility"]) and np.isfinite(entry["loss"])


@pytest.mark.slow
def test_orqa_starts_from_a_realm_run(tiny_task, tiny_bert_dir, tmp_path):
  """REALM's fine-tuning: ORQA over an index embedded from a REALM checkpoint takes its question
  encoder from the REALM retriever and its reader's BERT from the knowledge encoder."""
  task, workdir = tiny_task, str(tmp_path / "realm")
  random_index(task, tmp_path / "realm_index")
  handle = IndexHandle(IndexRoot(str(tmp_path / "realm_index")), task.store, poll_seconds=60)
  loop.train(task, loop.TrainConfig(workdir=workdir, num_train_steps=1, batch_size=8,
                                    learning_rate=1e-3, warmup_steps=1), index_handle=handle)
  handle.close()
  reader = checkpoints.CheckpointReader(run_directory.checkpoint_dir(workdir))
  shapes = partitioning.unbox(jax.eval_shape(lambda: task.init_params(jax.random.key(0))))
  realm_params = reader.restore_params(1, checkpoints.abstract_with_sharding(
      shapes, jax.sharding.SingleDeviceSharding(jax.devices()[0])))
  reader.close()
  index_dir = str(tmp_path / "orqa_index")
  embed_and_publish(task.store, realm_params, task.config.retriever,
                    IndexConfig(index_dir=index_dir, embedding=EmbedSettings(64, "float32")),
                    checkpoint_step=1, run=runs.run_identity(workdir))

  orqa = tiny_orqa_task(task.store.directory, tiny_bert_dir, index_dir, retriever_workdir=workdir)
  params = orqa.warm_start(orqa.init_params(jax.random.key(1)), MESH)
  same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a),
                                                               jax.tree.leaves(b)))
  assert same(params["retriever"]["query_encoder"], realm_params["query_encoder"])
  assert same(params["reader"]["bert"], realm_params[KNOWLEDGE_ENCODER]["bert"])
  # Not the reader ORQA starts from otherwise.
  _, reader_rng = jax.random.split(jax.random.key(1))
  assert not same(params["reader"]["bert"],
                  reader_lib.init_params(orqa.config.reader, reader_rng)["bert"])


@pytest.mark.slow
def test_train_cli_runs_realm_on_its_own_refreshed_index(salient_squad_store, tiny_bert_dir,
                                                         tmp_path):
  """`python -m orqa_realm.train --task=realm --refresh_index`: the initial model is indexed, the
  steps log REALM's metrics with the index version, the final evaluation the held-out scores,
  and --realm_marginal=span is accepted."""
  result = subprocess.run(
      [sys.executable, "-m", "orqa_realm.train", "--task=realm", f"--workdir={tmp_path / 'run'}",
       f"--block_store={salient_squad_store.directory}", f"--bert={tiny_bert_dir}",
       "--from_scratch", "--projection_size=16", "--query_length=24", "--block_length=48",
       "--realm_document_length=40", "--realm_num_candidates=3", "--max_masks=6",
       "--realm_marginal=span", "--refresh_index", f"--index_dir={tmp_path / 'index'}",
       "--batch_size=4", "--num_train_steps=2", "--log_every_steps=1",
       "--checkpoint_every_steps=2", "--learning_rate=1e-3", "--warmup_steps=1",
       "--dtype=float32", "--embed_dtype=float32"],
      cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  steps = [r for r in records if "loss" in r]
  assert [r["step"] for r in steps] == [1, 2]
  evaluations = [r for r in records if "loss" not in r]
  assert [r["step"] for r in evaluations] == [2]
  assert np.isfinite(evaluations[0]["eval_heldout_retrieval_utility"])
  for record in steps:
    assert record["index_version"] >= 1 and record["loss"] > 0
    assert {"retrieval_utility", "null_probability", "masked_accuracy",
            "index_staleness_steps"} <= set(record)
  assert IndexRoot(str(tmp_path / "index")).read(1).checkpoint_step == 0

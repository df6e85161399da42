"""ADORE: each question's negatives are the best allowed blocks of its own ranking in the frozen
index by the current question tower, weighted by the MRR change of swapping them with the
positive; the loss against NumPy; the run's question tower searches the index in `evaluate`
(another index is refused) and is what `export` writes."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from orqa_realm.core import parallel
from orqa_realm.core.errors import InputError
from orqa_realm.data.answers import has_answer
from orqa_realm.data.qa import question_indices
from orqa_realm.encode import embedding, evaluation, runs
from orqa_realm.index.handle import open_index
from orqa_realm.modeling import partitioning, retriever
from orqa_realm.tasks.base import StepContext
from orqa_realm.training import loop
from tests.bad_input.cli import run_command
from tests.tasks.tiny_ict import tiny_source
from tests.tasks.tiny_orqa import tiny_adore_task

MESH = parallel.make_mesh()


@pytest.fixture(scope="module")
def tiny_task(squad_block_store, tiny_bert_dir, small_squad, tmp_path_factory):
  index_dir = str(tmp_path_factory.mktemp("adore") / "index")
  return tiny_adore_task(squad_block_store.directory, tiny_bert_dir, index_dir, small_squad)


def test_negatives_are_the_question_towers_own_best_in_the_frozen_index(tiny_task):
  task, store = tiny_task, tiny_task.store
  params = partitioning.unbox(task.init_params(jax.random.key(0)))
  batch = task.train_batch(4, StepContext(MESH, params=params))
  queries = np.asarray(retriever.DualEncoder(task.config.retriever).apply(
      {"params": params}, batch.queries, method=retriever.DualEncoder.embed_queries))
  index = open_index(embedding.latest_version(task.config.index_dir), store).embeddings
  candidates = np.asarray(batch.candidate_embeddings)  # [8, 4, dim]
  indices = question_indices(len(task.examples), 8, seed=0, step=4)
  for row, (query, i) in enumerate(zip(queries, indices)):
    example = task.examples[i]
    ranking = np.argsort(-(index @ query), kind="stable")[:50]
    allowed = [(rank, int(b)) for rank, b in enumerate(ranking, 1) if b != example.positive
               and not has_answer(store.text(int(b)), example.answers, example.answer_kind)
               and int(store.document_index(int(b))) not in example.excluded_documents][:3]
    expected_ids = [example.positive] + [b for _, b in allowed]
    np.testing.assert_allclose(candidates[row], index[expected_ids], rtol=1e-6)
    positive_rank = list(ranking).index(example.positive) + 1 if (
        example.positive in ranking) else 0
    rr = lambda r: 1.0 / r if 1 <= r <= 10 else 0.0
    np.testing.assert_allclose(batch.pair_weights[row],
                               [0.0] + [abs(rr(positive_rank) - rr(r)) for r, _ in allowed],
                               rtol=1e-6, atol=1e-7)


def test_loss_equals_numpy_on_a_real_batch(tiny_task):
  params = partitioning.unbox(tiny_task.init_params(jax.random.key(0)))
  batch = tiny_task.train_batch(0, StepContext(MESH, params=params))
  weights = np.random.default_rng(0).random((8, 4)).astype(np.float32)  # every pair counts
  batch = batch._replace(pair_weights=weights)
  loss, _ = jax.jit(lambda p, b: tiny_task.loss(p, b, jax.random.key(1), True))(params, batch)
  queries = np.asarray(retriever.DualEncoder(tiny_task.config.retriever).apply(
      {"params": params}, batch.queries, method=retriever.DualEncoder.embed_queries), np.float64)
  scores = np.einsum("qd,qcd->qc", queries, np.asarray(batch.candidate_embeddings, np.float64))
  pairs = [(weights[q, j], np.log1p(np.exp(-(scores[q, 0] - scores[q, j]))))
           for q in range(8) for j in range(1, 4)]
  expected = sum(w * l for w, l in pairs) / sum(w for w, _ in pairs)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_evaluate_searches_the_frozen_index_with_the_runs_question_tower(tiny_task, tmp_path):
  state = loop.train(tiny_task, loop.TrainConfig(
      workdir=str(tmp_path / "adore"), num_train_steps=2, batch_size=8, learning_rate=1e-3,
      warmup_steps=1, async_checkpoints=False))
  version = embedding.latest_version(tiny_task.config.index_dir)
  encoder = evaluation.query_encoder(runs.RunCheckpoint(str(tmp_path / "adore")), "", version,
                                     tiny_task.tokenizer, {}, MESH)
  assert encoder.checkpoint_step == 2
  for found, trained in zip(jax.tree.leaves(encoder.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(found, trained)
  # An index embedded by another block encoder than the one the run was trained over is refused.
  other = dataclasses.replace(version, checkpoint_step=3, metadata=dict(
      version.metadata, run=dict(workdir="/runs/other", run_id="other")))
  with pytest.raises(InputError, match="the run was trained over blocks embedded by"):
    evaluation.query_encoder(runs.RunCheckpoint(str(tmp_path / "adore")), "", other,
                             tiny_task.tokenizer, {}, MESH)
  # Its checkpoints hold no block tower: whoever needs both towers is told what it is, and the
  # export writes its question tower.
  with pytest.raises(InputError, match="an ADORE run holds a question tower only"):
    runs.open_retriever_run(str(tmp_path / "adore"))
  exported = run_command("export", f"--workdir={tmp_path / 'adore'}",
                         f"--output_dir={tmp_path / 'export'}")
  assert exported.returncode == 0, exported.stderr[-3000:]
  record = json.loads((tmp_path / "export" / "export.json").read_text())
  assert record["task"] == "adore" and record["checkpoint_step"] == 2
  assert set(record["towers"]) == {"query_encoder"}


def test_a_question_encoder_from_scratch_is_refused(squad_block_store, tiny_bert_dir,
                                                   small_squad, tmp_path):
  with pytest.raises(InputError, match="must start from the weights the index was embedded"):
    tiny_adore_task(squad_block_store.directory, tiny_bert_dir, str(tmp_path / "index"),
                    small_squad, source=tiny_source(squad_block_store.directory, tiny_bert_dir))

"""ART: candidates from the index version handed over, the LM teacher's scores against a direct
per-passage computation, the loss against a NumPy KL, and the end-to-end run with its
refresher."""

import jax
import numpy as np
import pytest

from orqa_realm.core import parallel
from orqa_realm.core.errors import InputError
from orqa_realm.data.decoder_tokenization import pad_right
from orqa_realm.data.qa import question_indices
from orqa_realm.index.handle import open_index
from orqa_realm.index.storage import IndexRoot
from orqa_realm.modeling import generation, retriever
from orqa_realm.tasks.base import StepContext
from tests.index.hold_batch import assert_switched_with_staleness, train_through_a_refresh
from tests.tasks.tiny_art import tiny_art_task

MESH = parallel.make_mesh()


@pytest.fixture(scope="module")
def tiny_task(squad_block_store, tiny_bert_dir, tiny_decoder_dir):
  # The tiny random teacher's log-likelihoods differ little between passages: a low temperature
  # makes its distribution, and so the loss, far from uniform.
  return tiny_art_task(squad_block_store.directory, tiny_bert_dir, tiny_decoder_dir,
                       teacher_temperature=0.01)


@pytest.fixture(scope="module")
def index(tiny_task, tmp_path_factory):
  store = tiny_task.store
  root = IndexRoot(str(tmp_path_factory.mktemp("art") / "index"))
  embeddings = np.random.default_rng(1).normal(size=(len(store), 16)).astype(np.float32)
  root.publish(embeddings, store_fingerprint=store.fingerprint, checkpoint_step=0)
  return open_index(root.latest(), store)


@pytest.fixture(scope="module")
def batch_and_params(tiny_task, index):
  params = tiny_task.init_params(jax.random.key(0))
  return tiny_task.train_batch(3, StepContext(MESH, params=params, index=index)), params


def test_candidates_are_the_index_top_k(tiny_task, index, batch_and_params):
  batch, params = batch_and_params
  queries = np.asarray(retriever.DualEncoder(tiny_task.config.retriever).apply(
      {"params": params}, batch.queries, method=retriever.DualEncoder.embed_queries))
  assert batch.block_ids.shape == (8, 4)
  for query, candidates in zip(queries, batch.block_ids):
    top = np.argsort(-(index.embeddings @ query), kind="stable")[:4]
    assert set(candidates.tolist()) == set(top.tolist())


def test_teacher_scores_equal_a_direct_computation(tiny_task, batch_and_params):
  """Each score is the mean log-probability of the question's tokens after the prompt holding
  the block, computed here alone from the decoder's per-token log-probabilities."""
  batch, _ = batch_and_params
  teacher = tiny_task.teacher
  indices = question_indices(len(tiny_task.questions), 8, seed=0, step=3)
  for row in (0, 5):
    question = tiny_task.questions[indices[row]]
    question_ids = teacher.question_ids(question)
    for column in (0, 3):
      block = int(batch.block_ids[row, column])
      prompt = teacher.prompt_ids(block)
      assert tiny_task.store.title(block) in teacher.tokenizer.decode(prompt)
      sequence = pad_right([prompt + question_ids], teacher.tokenizer.pad_id)
      log_probs = np.asarray(generation.token_log_probs(
          teacher.model, teacher.params, sequence.token_ids, sequence.input_mask))[0]
      expected = log_probs[len(prompt) - 1:len(prompt) - 1 + len(question_ids)].mean()
      np.testing.assert_allclose(batch.teacher_scores[row, column], expected, rtol=1e-5)


def test_loss_against_numpy(tiny_task, batch_and_params):
  batch, params = batch_and_params
  loss, metrics = tiny_task.loss(params, batch, jax.random.key(0), deterministic=True)
  model = retriever.DualEncoder(tiny_task.config.retriever)
  queries, blocks = (np.asarray(x) for x in model.apply({"params": params}, batch.queries,
                                                          batch.blocks, True))
  scores = tiny_task.config.retriever.score_scale * np.einsum(
      "bd,bkd->bk", queries, blocks.reshape(8, 4, -1))
  log_softmax = lambda x: x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(
      -1, keepdims=True)) - x.max(-1, keepdims=True)
  teacher_log_p = log_softmax(batch.teacher_scores.astype(np.float64) / 0.01)
  student_log_p = log_softmax(scores.astype(np.float64))
  expected = np.mean(np.sum(np.exp(teacher_log_p) * (teacher_log_p - student_log_p), -1))
  assert expected > 0.01  # a loss far from 0, where a wrong formula shows
  np.testing.assert_allclose(loss, expected, rtol=1e-4)
  assert 0 <= metrics["teacher_agreement"] <= 1


def test_bad_settings_refused(squad_block_store, tiny_bert_dir, tiny_decoder_dir):
  with pytest.raises(InputError, match="at least 2"):
    tiny_art_task(squad_block_store.directory, tiny_bert_dir, tiny_decoder_dir, candidates=1)
  with pytest.raises(InputError, match="exactly one of"):
    tiny_art_task(squad_block_store.directory, tiny_bert_dir, tiny_decoder_dir, qa_dataset="")


@pytest.mark.slow
def test_trains_over_its_refreshed_index(tiny_task, tmp_path):
  """ART end to end: the initial model indexed before step 0, candidates from each version in
  turn, a refreshed version switched to, and the loss logged at every step."""
  root, logged = train_through_a_refresh(tiny_task, tmp_path)
  assert_switched_with_staleness(root, logged)
  assert all(np.isfinite(entry["loss"]) for entry in logged)

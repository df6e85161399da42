"""ANCE: negatives mined from the index version the loop hands over (never an answer, the gold
paragraph or the positive), the initial model indexed before step 0, and a switch to a refreshed
version mid-run with its staleness logged."""

import jax
import numpy as np
import pytest

from orqa_realm.core import parallel
from orqa_realm.core.errors import InputError
from orqa_realm.data.answers import has_answer
from orqa_realm.index.handle import open_index
from orqa_realm.index.storage import IndexRoot
from orqa_realm.modeling import retriever
from orqa_realm.tasks.base import StepContext
from orqa_realm.training import loop
from tests.index.hold_batch import assert_switched_with_staleness, train_through_a_refresh
from tests.tasks.tiny_dpr import tiny_ance_task

MESH = parallel.make_mesh()


@pytest.fixture(scope="module")
def tiny_task(squad_block_store, tiny_bert_dir):
  return tiny_ance_task(squad_block_store.directory, tiny_bert_dir, negative_depth=10)


def publish_random_version(root: IndexRoot, store, seed: int):
  embeddings = np.random.default_rng(seed).normal(size=(len(store), 16)).astype(np.float32)
  root.publish(embeddings, store_fingerprint=store.fingerprint, checkpoint_step=seed)
  return open_index(root.latest(), store)


def test_negatives_come_from_the_index_version_handed_over(tiny_task, tmp_path):
  task, store = tiny_task, tiny_task.store
  root = IndexRoot(str(tmp_path / "index"))
  older, newer = publish_random_version(root, store, 1), publish_random_version(root, store, 2)
  params = task.init_params(jax.random.key(0))
  batch = task.train_batch(5, StepContext(MESH, params=params, index=newer))
  queries = np.asarray(retriever.DualEncoder(task.config.retriever).apply(
      {"params": params}, batch.queries, method=retriever.DualEncoder.embed_queries))
  groups = batch.block_ids.reshape(8, 3)  # per question: its positive, then 2 negatives
  for query, positive, pair in zip(queries, groups[:, 0], groups[:, 1:]):
    top = np.argsort(-(newer.embeddings @ query), kind="stable")[:10]
    assert set(pair) <= set(top.tolist()), (pair, top)  # from the newest version's top 10
    example = next(e for e in task.examples if e.positive == positive)
    for negative in pair:
      assert negative != positive
      assert not has_answer(store.text(int(negative)), example.answers)
      assert int(store.document_index(int(negative))) not in example.excluded_documents
  # Another version gives other negatives for the same questions and positives.
  other = task.train_batch(5, StepContext(MESH, params=params, index=older))
  other_groups = other.block_ids.reshape(8, 3)
  np.testing.assert_array_equal(other_groups[:, 0], groups[:, 0])
  assert not np.array_equal(other_groups[:, 1:], groups[:, 1:])
  with pytest.raises(RuntimeError, match="did not declare Need.INDEX"):
    task.train_batch(5, StepContext(MESH, params=params))


@pytest.mark.slow
def test_the_initial_model_is_indexed_first_and_a_refresh_is_switched_to(tiny_task, tmp_path):
  assert_switched_with_staleness(*train_through_a_refresh(tiny_task, tmp_path))


def test_without_an_index_the_loop_says_what_to_pass(tiny_task, tmp_path):
  config = loop.TrainConfig(workdir=str(tmp_path / "run"), num_train_steps=1, batch_size=8)
  with pytest.raises(InputError, match="--refresh_index and --index_dir"):
    loop.train(tiny_task, config)

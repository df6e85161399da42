"""The masked-LM task: its inputs are REALM's null-document inputs, its held-out sentences come
from held-out documents only, its loss is a direct NumPy computation, and REALM starts its
knowledge encoder from its run."""

import jax
import numpy as np
import pytest

from orqa_realm.core import parallel
from orqa_realm.core.errors import InputError
from orqa_realm.modeling import mlm, partitioning
from orqa_realm.modeling.mlm import KNOWLEDGE_ENCODER
from orqa_realm.tasks.base import StepContext
from orqa_realm.training import loop
from tests.tasks.tiny_mlm import tiny_mlm_task
from tests.tasks.tiny_realm import tiny_realm_task

MESH = parallel.make_mesh()


@pytest.fixture(scope="module")
def tiny_task(salient_squad_store, tiny_bert_dir):
  return tiny_mlm_task(salient_squad_store.directory, tiny_bert_dir)


def test_inputs_are_the_masked_sentence_and_the_null_document(tiny_task):
  batch = tiny_task.train_batch(3, StepContext(MESH))
  tokenizer, store = tiny_task.tokenizer, tiny_task.store
  queries = tiny_task.examples.batch(3, 8)
  for row, query in enumerate(queries):
    length = int(batch.inputs.input_mask[row].sum())
    # REALM's null document: an empty second segment.
    expected = [tokenizer.cls_id, *query.masked.token_ids, tokenizer.sep_id, tokenizer.sep_id]
    assert batch.inputs.token_ids[row, :length].tolist() == expected
    count = int(batch.target_mask[row].sum())
    positions = batch.mask_positions[row, :count]
    assert (batch.inputs.token_ids[row, positions] == tokenizer.mask_id).all()
    original = store.token_ids(query.block)
    # The targets are the block's wordpieces that the masks hide (a salient span).
    assert np.isin(batch.targets[row, :count], original).all()
  # Padded to a multiple of 64, at most the window and the null document's [SEP].
  assert batch.inputs.token_ids.shape[1] == tiny_task.config.query_length + 1


def test_held_out_sentences_come_from_held_out_documents(tiny_task):
  documents = lambda examples: {tiny_task.store.document_index(int(block))
                                for block in examples.units.blocks}
  trained, held_out = documents(tiny_task.examples), documents(tiny_task.eval_examples)
  assert held_out and trained and not trained & held_out
  assert len(list(tiny_task.eval_batches())) == 2


def test_loss_against_numpy(tiny_task):
  batch = tiny_task.train_batch(0, StepContext(MESH))
  params = partitioning.unbox(tiny_task.init_params(jax.random.key(0)))
  loss, metrics = tiny_task.loss(params, batch, jax.random.key(0), True)
  logits = np.asarray(mlm.KnowledgeAugmentedEncoder(tiny_task.knowledge_config).apply(
      {"params": params[KNOWLEDGE_ENCODER]}, batch.inputs, batch.mask_positions), np.float64)
  log_p = logits - logits.max(-1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
  picked = np.take_along_axis(log_p, batch.targets[..., None], -1)[..., 0]
  np.testing.assert_allclose(loss, -picked[batch.target_mask].mean(), rtol=1e-5)
  accuracy = (logits.argmax(-1) == batch.targets)[batch.target_mask].mean()
  np.testing.assert_allclose(metrics["masked_accuracy"], accuracy, rtol=1e-6)
  assert tiny_task.loss_weight(batch) == batch.target_mask.sum()


def test_random_masking_needs_no_salient_spans(squad_block_store, tiny_bert_dir):
  task = tiny_mlm_task(squad_block_store.directory, tiny_bert_dir, masking="random_token")
  batch = task.train_batch(0, StepContext(MESH))
  assert batch.target_mask.any(axis=1).all()


def test_realm_starts_its_knowledge_encoder_from_an_mlm_run(tiny_task, salient_squad_store,
                                                            tiny_bert_dir, tmp_path):
  workdir = str(tmp_path / "mlm")
  trained = loop.train(tiny_task, loop.TrainConfig(
      workdir=workdir, num_train_steps=2, batch_size=8, learning_rate=1e-3, warmup_steps=0,
      async_checkpoints=False))
  realm = tiny_realm_task(salient_squad_store.directory, tiny_bert_dir,
                          knowledge_workdir=workdir)
  params = realm.warm_start(partitioning.unbox(realm.init_params(jax.random.key(1))), MESH)
  for ours, theirs in zip(jax.tree.leaves(params[KNOWLEDGE_ENCODER]),
                          jax.tree.leaves(jax.device_get(trained.params[KNOWLEDGE_ENCODER]))):
    np.testing.assert_array_equal(ours, theirs)
  # A run without a knowledge encoder is refused, naming what it is.
  not_mlm = tiny_realm_task(salient_squad_store.directory, tiny_bert_dir,
                            knowledge_workdir=str(tmp_path / "missing"))
  with pytest.raises(InputError):
    not_mlm.warm_start(partitioning.unbox(realm.init_params(jax.random.key(1))), MESH)


def test_an_mlm_run_is_refused_where_a_retriever_is_expected(tiny_task, tmp_path):
  from orqa_realm.encode import runs

  workdir = str(tmp_path / "mlm")
  loop.train(tiny_task, loop.TrainConfig(workdir=workdir, num_train_steps=1, batch_size=8,
                                         async_checkpoints=False))
  with pytest.raises(InputError, match="holds no retriever"):
    runs.open_retriever_run(workdir)

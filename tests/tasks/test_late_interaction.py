"""The multi-vector tasks (ColBERT, ME-BERT, poly-encoder): the batch (each query augmented and
marked, its positive then its hard negatives), the loss against NumPy on a real batch (in-batch
softmax over the global batch, ColBERTv2's KL from a teacher), a run's log and its recall
evaluation against a NumPy search, and runs of one kind refused where another is expected."""

import json

import jax
import numpy as np
import pytest

from orqa_realm.core import parallel
from orqa_realm.core.errors import InputError
from orqa_realm.data.answers import answer_hits, recall_at_k
from orqa_realm.data.multi_vector_inputs import MarkerIds
from orqa_realm.encode import multi_vector as encode
from orqa_realm.encode import runs
from orqa_realm.modeling import partitioning
from orqa_realm.modeling.multi_vector import MultiVectorEncoder
from orqa_realm.tasks.base import StepContext
from tests.modeling.test_multi_vector import numpy_scores
from tests.tasks.tiny_late_interaction import tiny_late_interaction_task

MESH = parallel.make_mesh()


@pytest.fixture(scope="module")
def colbert_task(tiny_colbert_task):
  """The tiny ColBERT task of the `tiny_colbert_run` fixture."""
  return tiny_colbert_task


def test_batch_marks_queries_and_blocks_and_groups_candidates(colbert_task):
  task = colbert_task
  batch = task.train_batch(2, StepContext(MESH))
  ids = MarkerIds.of(task.tokenizer)
  assert batch.queries.tokens.token_ids.shape == (8, 12)
  assert batch.blocks.tokens.token_ids.shape == (24, 48) and batch.block_ids.shape == (24,)
  assert (batch.queries.tokens.token_ids[:, 1] == ids.query_marker).all()
  assert (batch.blocks.tokens.token_ids[:, 1] == ids.block_marker).all()
  assert batch.queries.vector_mask.all()  # [MASK] augmentation: every position a vector
  punctuation = np.isin(batch.blocks.tokens.token_ids, ids.punctuation)
  np.testing.assert_array_equal(batch.blocks.vector_mask,
                                batch.blocks.tokens.input_mask * ~punctuation)
  for positive, negatives in zip(*np.split(batch.block_ids.reshape(8, 3), [1], axis=1)):
    assert any(example.positive == positive[0] and example.hard_negatives == tuple(negatives)
               for example in task.examples)
  half = task.train_batch(2, StepContext(MESH, slice(4, 8)))
  np.testing.assert_array_equal(half.block_ids, batch.block_ids[12:])
  np.testing.assert_array_equal(half.queries.tokens.token_ids,
                                batch.queries.tokens.token_ids[4:])


def numpy_in_batch_loss(scores: np.ndarray, block_ids: np.ndarray) -> float:
  group = scores.shape[1] // scores.shape[0]
  losses = []
  for i, row in enumerate(scores):
    positive = group * i
    kept = [j for j in range(len(row))
            if j == positive or block_ids[j] != block_ids[positive]]
    losses.append(np.log(np.exp(row[kept]).sum()) - row[positive])
  return float(np.mean(losses))


@pytest.mark.parametrize("kind", ["colbert", "me_bert", "poly_encoder"])
def test_loss_equals_numpy_on_a_real_batch(kind, squad_block_store, tiny_bert_dir, small_squad,
                                           colbert_task):
  task = colbert_task if kind == "colbert" else tiny_late_interaction_task(
      kind, squad_block_store.directory, tiny_bert_dir, qa_dataset=small_squad)
  params = partitioning.unbox(task.init_params(jax.random.key(0)))
  batch = task.train_batch(0, StepContext(MESH))
  loss, metrics = task.loss(params, batch, jax.random.key(1), deterministic=True)
  config = task.config.retriever
  queries, blocks = MultiVectorEncoder(config).apply({"params": params}, batch.queries,
                                                     batch.blocks)
  scores = config.score_scale * numpy_scores(kind, *(np.asarray(x, np.float64)
                                                     for x in (*queries, *blocks)))
  np.testing.assert_allclose(loss, numpy_in_batch_loss(scores, batch.block_ids), rtol=1e-5)
  assert metrics["in_batch_loss"] == loss and 0.0 <= metrics["accuracy"] <= 1.0


def test_colbert_distils_a_teacher_with_listwise_kl(squad_block_store, tiny_bert_dir,
                                                    tiny_cross_encoder_run):
  task = tiny_late_interaction_task("colbert", squad_block_store.directory, tiny_bert_dir,
                                    teacher_workdir=tiny_cross_encoder_run, distill_weight=0.5,
                                    distill_temperature=2.0)
  params = partitioning.unbox(task.init_params(jax.random.key(0)))
  batch = task.train_batch(1, StepContext(MESH))
  assert batch.teacher_scores.shape == (8, 3) and np.ptp(batch.teacher_scores) > 0
  loss, metrics = task.loss(params, batch, jax.random.key(1), deterministic=True)
  queries, blocks = MultiVectorEncoder(task.config.retriever).apply(
      {"params": params}, batch.queries, batch.blocks)
  scores = numpy_scores("colbert", *(np.asarray(x, np.float64) for x in (*queries, *blocks)))
  student = np.stack([scores[i, 3 * i:3 * i + 3] for i in range(8)])  # own candidates
  log_softmax = lambda x: x - np.log(np.exp(x - x.max(1, keepdims=True)).sum(
      1, keepdims=True)) - x.max(1, keepdims=True)
  teacher = log_softmax(batch.teacher_scores / 2.0)
  kl = np.mean(np.sum(np.exp(teacher) * (teacher - log_softmax(student)), axis=1))
  np.testing.assert_allclose(metrics["distill_loss"], kl, rtol=1e-4)
  np.testing.assert_allclose(loss, numpy_in_batch_loss(scores, batch.block_ids) + 0.5 * kl,
                             rtol=1e-5)


def test_distillation_settings_need_each_other(squad_block_store, tiny_bert_dir,
                                              tiny_cross_encoder_run):
  with pytest.raises(InputError, match="at least one mined negative"):
    tiny_late_interaction_task("colbert", squad_block_store.directory, tiny_bert_dir,
                               teacher_workdir=tiny_cross_encoder_run,
                               hard_negatives_per_question=0)
  with pytest.raises(InputError, match="--distill_weight and --distill_temperature weigh"):
    tiny_late_interaction_task("colbert", squad_block_store.directory, tiny_bert_dir,
                               distill_weight=0.5)


def test_a_run_logs_its_losses_and_its_recall(tiny_colbert_run):
  with open(f"{tiny_colbert_run}/metrics.jsonl", encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records if "loss" in r] == [3, 6]
  assert all(r["loss"] == r["in_batch_loss"] > 0 for r in records if "loss" in r)
  final = [r for r in records if "eval_answer_recall@20" in r]
  assert [r["step"] for r in final] == [6]
  assert 0.0 <= final[0]["eval_answer_recall@1"] <= final[0]["eval_answer_recall@20"] <= 1.0


def test_runs_of_one_kind_are_refused_where_another_is_expected(tiny_colbert_run, colbert_task,
                                                                tiny_cross_encoder_run):
  workdir = tiny_colbert_run
  restored = runs.restore_multi_vector_run(workdir, None, MESH)
  assert restored.config == colbert_task.config.retriever and restored.step == 6
  with pytest.raises(InputError, match=r"multi-vector retriever \(colbert\).*dual-encoder"):
    runs.open_retriever_run(workdir)
  with pytest.raises(InputError, match=r"multi-vector retriever \(colbert\).*cross-encoder run"):
    runs.restore_cross_encoder_run(workdir, None, MESH)
  with pytest.raises(InputError, match="is a cross-encoder, where a multi-vector retriever"):
    runs.restore_multi_vector_run(tiny_cross_encoder_run, None, MESH)


def test_evaluation_recall_is_exact_search_over_the_store(colbert_task, tiny_colbert_run):
  """The task's recall equals a NumPy MaxSim of every held-out question against every block."""
  task = colbert_task
  params = runs.restore_multi_vector_run(tiny_colbert_run, None, MESH).params
  metrics = task.evaluate(params, MESH)
  config = task.config.retriever
  corpus = encode.encode_blocks(task.store, task.tokenizer, params, config, mesh=MESH)
  queries = encode.encode_queries([example.question for example in task.eval_examples],
                                  task.tokenizer, params, config, mesh=MESH)
  scores = numpy_scores("colbert", *queries, *corpus.padded())  # [20, blocks]
  top = np.argsort(-scores, axis=1, kind="stable")[:, :20]
  expected = recall_at_k(answer_hits(top, task.store, task.eval_examples), [1, 5, 20])
  assert metrics == {f"answer_recall@{k}": pytest.approx(value)
                     for k, value in expected.items()}

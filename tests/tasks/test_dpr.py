"""DPR task: the batch layout (positives, then hard negatives, with their block ids), the loss
against NumPy on a real batch, 4 simulated devices against 1, and the train CLI."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from orqa_realm.core import checkpoints, parallel, run_directory
from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import build_block_store
from orqa_realm.data.documents import Document
from orqa_realm.encode import runs
from orqa_realm.modeling import retriever
from orqa_realm.tasks.base import StepContext
from orqa_realm.tasks.pairs import TrainingPairs
from orqa_realm.training import loop
from tests.conftest import DEMO_SQUAD, REPO_ROOT, subprocess_env
from tests.tasks.tiny_dpr import tiny_dpr_task, tiny_star_task
from tests.tasks.tiny_ict import tiny_ict_task, tiny_source

MESH = parallel.make_mesh()


@pytest.fixture(scope="module")
def tiny_task(squad_block_store, tiny_bert_dir):
  return tiny_dpr_task(squad_block_store.directory, tiny_bert_dir)


def test_batch_holds_each_positive_then_its_hard_negatives(tiny_task):
  batch = tiny_task.train_batch(3, StepContext(MESH))
  store, config = tiny_task.store, tiny_task.config
  assert batch.queries.token_ids.shape == (8, 16)
  assert batch.blocks.token_ids.shape == (8 * 3, 48) and batch.block_ids.shape == (24,)
  expected = store.encode(batch.block_ids, max_length=48,
                          block_format=config.retriever.block_format)
  np.testing.assert_array_equal(batch.blocks.token_ids, expected.token_ids)
  # Each example's blocks are its positive, then its negatives, in example order.
  groups = batch.block_ids.reshape(8, 3)
  for row, (positive, pair) in enumerate(zip(groups[:, 0], groups[:, 1:])):
    matching = [example for example in tiny_task.examples
                if example.positive == positive and tuple(pair) == example.hard_negatives]
    assert matching, (positive, pair)
    # The row's question is the one of an example with this positive and these negatives.
    assert any(np.array_equal(batch.queries.token_ids[row], tiny_task.tokenizer.encode_queries(
        [example.question], 16).token_ids[0]) for example in matching)
  # The same step gives the same batch (a resumed run reads the same data).
  np.testing.assert_array_equal(tiny_task.train_batch(3, StepContext(MESH)).block_ids,
                                batch.block_ids)
  # A host's rows of the batch are those rows of the whole batch, built alone.
  half = tiny_task.train_batch(3, StepContext(MESH, slice(4, 8)))
  np.testing.assert_array_equal(half.queries.token_ids, batch.queries.token_ids[4:])
  np.testing.assert_array_equal(half.block_ids, batch.block_ids[12:])


def test_loss_equals_numpy_on_a_real_batch(tiny_task):
  params = tiny_task.init_params(jax.random.key(0))
  batch = tiny_task.train_batch(0, StepContext(MESH))
  loss, metrics = tiny_task.loss(params, batch, jax.random.key(1), deterministic=True)
  queries, blocks = retriever.DualEncoder(tiny_task.config.retriever).apply(
      {"params": params}, batch.queries, batch.blocks, True)
  logits = np.asarray(queries, np.float64) @ np.asarray(blocks, np.float64).T  # [8, 24]
  expected = []
  for i, row in enumerate(logits):
    positive = 3 * i  # each question's group: its positive, then its 2 negatives
    kept = [j for j in range(len(row))
            if j == positive or batch.block_ids[j] != batch.block_ids[positive]]
    expected.append(np.log(np.exp(row[kept]).sum()) - row[positive])
  np.testing.assert_allclose(loss, np.mean(expected), rtol=1e-5)
  assert 0.0 <= metrics["accuracy"] <= 1.0


def test_beir_pairs_train_on_judged_positives(tokenizer, tiny_bert_dir, tmp_path):
  texts = ["Aspirin reduces the risk of heart attack.", "Aspirin reduces fever.",
           "Heart attacks are caused by blocked arteries.", "Vitamin C does not cure colds.",
           "Colds are caused by rhinoviruses.", "Exercise lowers blood pressure."]
  store = build_block_store([Document(f"d{i}", f"T{i}", text) for i, text in enumerate(texts)],
                            tokenizer, tmp_path / "store")
  (tmp_path / "queries.tsv").write_text("q1\tDoes aspirin prevent heart attacks?\n"
                                        "q2\tDoes vitamin C cure colds?\n")
  (tmp_path / "qrels.txt").write_text("q1 0 d0 1\nq1 0 d2 1\nq2 0 d3 1\nq2 0 d4 0\n")
  task = tiny_dpr_task(store.directory, tiny_bert_dir, batch_size=2,
                       pairs=TrainingPairs(beir_queries=str(tmp_path / "queries.tsv"),
                                           beir_qrels=str(tmp_path / "qrels.txt"),
                                           negative_depth=20),
                       hard_negatives_per_question=1)
  # One example per judged-relevant document: (q1, d0), (q1, d2), (q2, d3).
  assert sorted((e.question[:8], e.positive) for e in task.examples) == [
      ("Does asp", 0), ("Does asp", 2), ("Does vit", 3)]
  for step in range(3):
    batch = task.train_batch(step, StepContext(MESH))
    for positive, negative in batch.block_ids.reshape(2, 2):
      judged = {0, 2} if positive in (0, 2) else {3, 4}
      assert negative not in judged


@pytest.mark.slow
def test_train_cli_logs_loss_and_recall(squad_block_store, tiny_bert_dir, tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "orqa_realm.train", "--task=dpr", f"--workdir={tmp_path / 'run'}",
       f"--block_store={squad_block_store.directory}", f"--bert={tiny_bert_dir}",
       "--from_scratch", "--projection_size=16", "--query_length=16", "--block_length=48",
       f"--train_qa_dataset=squad:{DEMO_SQUAD}", "--hard_negative_depth=20",
       f"--eval_qa_dataset=squad:{DEMO_SQUAD}", "--eval_questions=50", "--eval_recall_ks=1,20",
       "--batch_size=8", "--num_train_steps=4", "--eval_every_steps=4", "--log_every_steps=2",
       "--checkpoint_every_steps=4", "--learning_rate=1e-3", "--warmup_steps=1",
       "--dtype=float32", f"--bm25_dir={tmp_path / 'bm25'}"],
      cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records if "loss" in r] == [2, 4]
  final = [r for r in records if "eval_answer_recall@20" in r][-1]
  assert final["step"] == 4 and 0.0 <= final["eval_answer_recall@1"] <= final[
      "eval_answer_recall@20"] <= 1.0
  assert (tmp_path / "bm25" / "bm25.json").exists()  # the BM25 index was kept for reuse


@pytest.mark.slow  # over a minute: CI runs it in its second step
def test_warm_start_takes_the_runs_latest_checkpoint(squad_block_store, tiny_bert_dir, tmp_path):
  """--retriever_workdir: DPR starts from the run's newest retriever (here an ICT run of 3
  steps, checkpoints 2 and 3), not from a fresh init; a run without checkpoints is refused; a
  warm-started run resumes from its own checkpoint."""
  ict = tiny_ict_task(squad_block_store.directory, tiny_bert_dir)
  loop.train(ict, loop.TrainConfig(
      workdir=str(tmp_path / "ict"), num_train_steps=3, batch_size=8, learning_rate=1e-3,
      warmup_steps=1, checkpoint_every_steps=2, async_checkpoints=False))
  reader = checkpoints.CheckpointReader(run_directory.checkpoint_dir(str(tmp_path / "ict")))
  assert reader.all_steps()[-1] == 3
  latest = runs.restore_retriever(reader, 3, ict.config.retriever, parallel.make_mesh())
  earlier = runs.restore_retriever(reader, 2, ict.config.retriever, parallel.make_mesh())
  reader.close()
  task = tiny_dpr_task(squad_block_store.directory, tiny_bert_dir,
                       retriever_workdir=str(tmp_path / "ict"),
                       source=tiny_source(squad_block_store.directory, tiny_bert_dir,
                                          from_scratch=False))
  params = task.warm_start(task.init_params(jax.random.key(1)), parallel.make_mesh())
  assert _same(params, latest) and not _same(params, earlier)
  empty = runs.RetrieverRun(str(tmp_path / "none"), "ict", ict.config.retriever, "", {})
  with pytest.raises(InputError, match="no checkpoint yet"):
    runs.restore_latest_retriever(empty, parallel.make_mesh())

  # A warm-started run stopped at checkpoint 2 resumes from it (the warm start's checkpoint is
  # not read again) and ends where an uninterrupted run ends.
  config = lambda workdir, steps: loop.TrainConfig(
      workdir=str(tmp_path / workdir), num_train_steps=steps, batch_size=8, learning_rate=1e-3,
      warmup_steps=1, checkpoint_every_steps=2, async_checkpoints=False)
  loop.train(task, config("dpr", 2))
  resumed = loop.train(task, config("dpr", 3))
  uninterrupted = loop.train(task, config("dpr_uninterrupted", 3))
  assert int(resumed.step) == 3
  assert _same(resumed.params, uninterrupted.params, atol=1e-6)


def _same(tree, other, atol: float = 0.0) -> bool:
  """Whether two param trees hold the same values (to `atol`)."""
  return all(np.allclose(a, b, rtol=0.0, atol=atol)
             for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(other)))


def test_grad_cache_gives_the_plain_loss_and_gradients(tiny_task, squad_block_store,
                                                       tiny_bert_dir):
  """--grad_cache_chunk: embedding 2 rows at a time, recomputed in the backward pass, gives the
  loss and gradients of embedding the batch at once (dropout off: its masks differ)."""
  chunked = tiny_dpr_task(squad_block_store.directory, tiny_bert_dir, grad_cache_chunk=2)
  params = tiny_task.init_params(jax.random.key(0))
  batch = tiny_task.train_batch(1, StepContext(MESH))
  grad = lambda task: jax.jit(jax.value_and_grad(
      lambda p, b: task.loss(p, b, jax.random.key(1), True)[0]))(params, batch)
  (plain_loss, plain_grads), (chunked_loss, chunked_grads) = grad(tiny_task), grad(chunked)
  np.testing.assert_allclose(chunked_loss, plain_loss, rtol=1e-6)
  # Equal up to float32 rounding, which differs between BERT calls on 2 rows and on 8 (1e-4
  # of the gradient's norm measured); a chunk embedded or differentiated wrongly is off by
  # the norm's order.
  difference = max(float(np.abs(found - plain).max())
                   for plain, found in zip(jax.tree.leaves(plain_grads),
                                           jax.tree.leaves(chunked_grads)))
  norm = float(np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(plain_grads))))
  assert difference <= 1e-3 * norm
  with pytest.raises(InputError, match="does not divide --batch_size=8"):
    tiny_dpr_task(squad_block_store.directory, tiny_bert_dir, grad_cache_chunk=3)


def test_star_loss_equals_numpy_on_a_real_batch(squad_block_store, tiny_bert_dir):
  """STAR: RankNet over each query's static hard negatives + alpha x RankNet over the batch's
  other blocks, the query's own positive block never a negative."""
  task = tiny_star_task(squad_block_store.directory, tiny_bert_dir, random_negative_weight=0.3)
  params = task.init_params(jax.random.key(0))
  batch = task.train_batch(0, StepContext(MESH))
  loss, _ = jax.jit(lambda p, b: task.loss(p, b, jax.random.key(1), True))(params, batch)
  queries, blocks = retriever.DualEncoder(task.config.retriever).apply(
      {"params": params}, batch.queries, batch.blocks, True)
  scores = np.asarray(queries, np.float64) @ np.asarray(blocks, np.float64).T  # [8, 24]
  hard, random = [], []
  for i, row in enumerate(scores):
    positive = 3 * i
    for j in range(24):
      if batch.block_ids[j] == batch.block_ids[positive]:
        continue
      pair = np.log1p(np.exp(-(row[positive] - row[j])))
      (hard if j // 3 == i else random).append(pair)
  np.testing.assert_allclose(loss, np.mean(hard) + 0.3 * np.mean(random), rtol=1e-5)

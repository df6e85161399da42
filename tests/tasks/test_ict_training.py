"""The training loop on ICT: multi-device equality, resume after a kill, SIGTERM, config guard."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from orqa_realm.core.errors import InputError
from orqa_realm.data.qa import QAEvaluation
from orqa_realm.training import loop
from tests.conftest import REPO_ROOT, subprocess_env
from tests.tasks.sharding import run_on_four_devices
from tests.tasks.tiny_ict import tiny_ict_task


@pytest.mark.slow  # over half a minute: CI runs it in its second step
def test_four_devices_equal_one(squad_block_store, tiny_bert_dir, tmp_path):
  found = run_on_four_devices("tests.tasks.sharded_ict_check", squad_block_store.directory,
                              tiny_bert_dir, str(tmp_path))
  np.testing.assert_allclose(found["loss_four"], found["loss_one"], rtol=1e-6)
  assert found["grad_difference"] <= 1e-5 * found["grad_scale"]
  assert found["param_difference"] <= 1e-5


def run_training(workdir, block_store, bert_dir, *extra, wait=True):
  command = [sys.executable, "-m", "orqa_realm.train", "--task=ict", f"--workdir={workdir}",
             f"--block_store={block_store}", f"--bert={bert_dir}", "--from_scratch",
             "--projection_size=16", "--query_length=16", "--block_length=48", "--batch_size=8",
             "--num_train_steps=8", "--learning_rate=1e-3", "--warmup_steps=2",
             "--log_every_steps=1", "--checkpoint_every_steps=2", "--ict_heldout_fraction=0.1",
             "--ict_eval_batches=1", *extra]
  if not wait:
    return subprocess.Popen(command, cwd=REPO_ROOT, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  return subprocess.run(command, cwd=REPO_ROOT, env=subprocess_env(), capture_output=True,
                        text=True, timeout=600)


def logged_losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  return {r["step"]: r["loss"] for r in records if "loss" in r}


def wait_for_step(workdir, step, process, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    assert process.poll() is None, process.communicate()[1][-3000:]
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.isfile(path) and max(logged_losses(workdir), default=0) >= step:
      return
    time.sleep(0.2)
  raise TimeoutError(f"step {step} was not reached")


@pytest.mark.slow  # over half a minute: CI runs it in its second step
def test_killed_run_resumes_with_the_same_losses(squad_block_store, tiny_bert_dir, tmp_path):
  store = squad_block_store.directory
  reference = run_training(tmp_path / "reference", store, tiny_bert_dir)
  assert reference.returncode == 0, reference.stderr[-3000:]
  expected = logged_losses(tmp_path / "reference")
  assert sorted(expected) == list(range(1, 9))

  workdir = tmp_path / "killed"
  process = run_training(workdir, store, tiny_bert_dir, wait=False)
  wait_for_step(workdir, 5, process)
  process.kill()  # SIGKILL: no chance to save anything
  process.communicate()
  resumed = run_training(workdir, store, tiny_bert_dir)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from checkpoint" in resumed.stdout
  losses = logged_losses(workdir)
  assert sorted(losses) == list(range(1, 9))
  for step in range(1, 9):
    np.testing.assert_allclose(losses[step], expected[step], rtol=1e-6, err_msg=f"step {step}")


def test_sigterm_saves_a_checkpoint_and_stops(squad_block_store, tiny_bert_dir, tmp_path):
  workdir = tmp_path / "preempted"
  process = run_training(workdir, squad_block_store.directory, tiny_bert_dir,
                         "--num_train_steps=1000", "--checkpoint_every_steps=1000", wait=False)
  wait_for_step(workdir, 3, process)
  process.send_signal(signal.SIGTERM)
  stdout, stderr = process.communicate(timeout=300)
  assert process.returncode == 0, stderr[-3000:]
  assert "SIGTERM: saved checkpoint" in stdout
  saved = int(stdout.split("SIGTERM: saved checkpoint ")[1].split(",")[0])
  assert saved >= 3 and str(saved) in os.listdir(workdir / "checkpoints")


def test_workdir_of_another_model_config_is_refused(squad_block_store, tiny_bert_dir, tmp_path):
  task = tiny_ict_task(squad_block_store.directory, tiny_bert_dir)
  config = loop.TrainConfig(workdir=str(tmp_path), num_train_steps=1, batch_size=8,
                            async_checkpoints=False)
  loop.train(task, config)
  other = tiny_ict_task(squad_block_store.directory, tiny_bert_dir,
                        retriever=dataclasses.replace(task.config.retriever, projection_size=8))
  with pytest.raises(InputError, match=r"run\.json: this workdir holds a run of another model "
                                       r"\(retriever\.projection_size: saved 16, now 8\)"):
    loop.train(other, config)


def test_a_run_of_an_earlier_layout_is_refused(squad_block_store, tiny_bert_dir, tmp_path):
  (tmp_path / "model_config.json").write_text("{}")
  task = tiny_ict_task(squad_block_store.directory, tiny_bert_dir)
  with pytest.raises(InputError, match="written by an earlier orqa_realm.*retrain"):
    loop.train(task, loop.TrainConfig(workdir=str(tmp_path), num_train_steps=1, batch_size=8))
  # A run of format version 1, whose checkpoints hold one entry per BERT layer.
  (tmp_path / "model_config.json").unlink()
  (tmp_path / "run.json").write_text(json.dumps(
      dict(format="orqa_realm.run", format_version=1, task="ict", model={}, settings={})))
  with pytest.raises(InputError, match=r"run format version 1, this one reads 2.*retrain"):
    loop.train(task, loop.TrainConfig(workdir=str(tmp_path), num_train_steps=1, batch_size=8))


def test_learning_rate_schedule_and_weight_decay_mask():
  config = loop.TrainConfig(workdir="", num_train_steps=100, batch_size=1,
                            learning_rate=1e-4, warmup_steps=10)
  schedule = loop.learning_rate_schedule(config)
  np.testing.assert_allclose([schedule(0), schedule(5), schedule(10), schedule(55), schedule(100)],
                             [0.0, 5e-5, 1e-4, 5e-5, 0.0], atol=1e-10)
  assert loop.default_warmup_steps(100_000) == 10_000
  assert loop.default_warmup_steps(500) == 100
  assert loop.default_warmup_steps(30_000) == 3_000
  # By name: a scanned BERT's stacked biases and scales have two axes, and are not decayed.
  params = {"dense": {"kernel": np.ones((2, 3)), "bias": np.ones(3)}, "norm": {"scale": np.ones(3)},
            "layers": {"norm": {"scale": np.ones((4, 3))}, "dense": {"bias": np.ones((4, 3))}},
            "embeddings": {"embedding": np.ones((5, 3))}, "mlm_output_bias": np.ones(5)}
  assert loop.weight_decay_mask(params) == {
      "dense": {"kernel": True, "bias": False}, "norm": {"scale": False},
      "layers": {"norm": {"scale": False}, "dense": {"bias": False}},
      "embeddings": {"embedding": True}, "mlm_output_bias": False}


def test_answer_recall_evaluation_matches_numpy_and_is_logged(squad_block_store, tiny_bert_dir,
                                                               tmp_path):
  import jax

  from orqa_realm.core import parallel
  from orqa_realm.data.answers import has_answer
  from orqa_realm.modeling import retriever
  from tests.conftest import DEMO_SQUAD

  task = tiny_ict_task(squad_block_store.directory, tiny_bert_dir, evaluation=QAEvaluation(
      qa_dataset=f"squad:{DEMO_SQUAD}", questions=40, recall_ks=(1, 5, 20)))
  assert len(task.recall.examples) == 40
  params = task.init_params(jax.random.key(3))
  found = task.evaluate(params, parallel.make_mesh())

  # Reference: every block padded to the full length in one batch, scores and ranks in NumPy.
  store, config = task.store, task.config
  model = retriever.DualEncoder(config.retriever)
  blocks = np.asarray(model.apply(
      {"params": params}, store.encode(range(len(store)), config.retriever.block_length,
                                       config.retriever.block_format),
      method=retriever.DualEncoder.embed_blocks))
  queries = np.asarray(model.apply(
      {"params": params}, task.tokenizer.encode_queries(
          [example.question for example in task.recall.examples], config.retriever.query_length),
      method=retriever.DualEncoder.embed_queries))
  ranking = np.argsort(-(queries @ blocks.T), axis=1, kind="stable")[:, :20]
  hits = np.array([[has_answer(store.text(block), example.answers) for block in row]
                   for row, example in zip(ranking, task.recall.examples)])
  expected = {f"answer_recall@{k}": hits[:, :k].any(axis=1).mean() for k in (1, 5, 20)}
  assert found.keys() == expected.keys()
  for name, value in expected.items():
    assert found[name] == pytest.approx(value), name
  assert found["answer_recall@20"] > 0  # a random tiny model still finds some answers in 20

  config = loop.TrainConfig(workdir=str(tmp_path), num_train_steps=2, batch_size=8,
                            eval_every_steps=2, async_checkpoints=False)
  loop.train(task, config)
  with open(tmp_path / "metrics.jsonl", encoding="utf-8") as f:
    evaluations = [record for record in map(json.loads, f) if "eval_answer_recall@5" in record]
  assert [record["step"] for record in evaluations] == [0, 2]  # the initial model, then step 2


def break_checkpoint(directory) -> None:
  """Loses a checkpoint's tree metadata and its arrays, as a failing disk or bucket might."""
  (directory / "default" / "_METADATA").unlink()
  for data_file in (directory / "default" / "ocdbt.process_0" / "d").iterdir():
    data_file.unlink()


def test_a_broken_newest_checkpoint_is_moved_aside_and_the_run_resumes_before_it(
    squad_block_store, tiny_bert_dir, tmp_path, capsys):
  """A checkpoint whose files were lost is neither overwritten nor a traceback: the run resumes
  from the newest one that restores, with the same data order, and the broken one is kept
  aside; a reader asked for it names it and the way out; when none restores, the error names
  each and nothing is moved."""
  from orqa_realm.core import checkpoints, parallel
  from orqa_realm.encode import runs

  task = tiny_ict_task(squad_block_store.directory, tiny_bert_dir, eval_batches=0)
  config = loop.TrainConfig(workdir=str(tmp_path), num_train_steps=4, batch_size=8,
                            checkpoint_every_steps=2, log_every_steps=1, async_checkpoints=False)
  loop.train(task, config)
  expected = logged_losses(tmp_path)
  break_checkpoint(tmp_path / "checkpoints" / "4")

  with checkpoints.CheckpointReader(tmp_path / "checkpoints") as reader:
    with pytest.raises(InputError, match=r"checkpoints/4: checkpoint 4 does not restore \(.*\); "
                                         r"the run's other checkpoints are \[(1, )?2\]"):
      runs.restore_retriever(reader, 4, task.config.retriever, parallel.make_mesh())
  capsys.readouterr()
  loop.train(task, config)  # the same settings: the learning rate schedule depends on them
  printed = capsys.readouterr().out
  assert "resumed from checkpoint 2" in printed
  [moved] = os.listdir(tmp_path / "broken_checkpoints")
  assert moved.startswith("4-") and f"moved it aside to {tmp_path / 'broken_checkpoints' / moved}" in printed
  assert os.path.isfile(tmp_path / "broken_checkpoints" / moved / "default" / "manifest.ocdbt")
  assert "4" in os.listdir(tmp_path / "checkpoints")  # saved again by the resumed run
  losses = logged_losses(tmp_path)
  assert sorted(losses) == [1, 2, 3, 4]
  for step in (3, 4):  # re-run from checkpoint 2 on the same batches
    np.testing.assert_allclose(losses[step], expected[step], rtol=1e-6, err_msg=f"step {step}")

  kept = sorted(os.listdir(tmp_path / "checkpoints"))
  for step in kept:
    break_checkpoint(tmp_path / "checkpoints" / step)
  failures = "; ".join(rf"{step}: .*" for step in sorted(kept, key=int, reverse=True))
  with pytest.raises(InputError, match=rf"no checkpoint restores \({failures}\): if the model's "
                                       r"code or settings changed, train in a new --workdir"):
    loop.train(task, config)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == kept  # nothing moved


def test_learning_rate_multipliers_scale_the_matched_parameters_steps():
  """A parameter matched by REGEX=FACTOR moves as AdamW at FACTOR x the learning rate (weight
  decay included); the others as without the rule; the first matching rule wins."""
  params = {"codes": np.full((2, 3), 0.5, np.float32),
            "projection": {"kernel": np.full((3, 2), -0.25, np.float32)},
            "bert": {"dense": {"kernel": np.full((3, 3), 0.1, np.float32)}}}
  grads = {"codes": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
           "projection": {"kernel": np.full((3, 2), 0.3, np.float32)},
           "bert": {"dense": {"kernel": np.full((3, 3), -0.2, np.float32)}}}
  base = dict(workdir="", num_train_steps=10, batch_size=1, learning_rate=1e-3, warmup_steps=0,
              max_grad_norm=100.0)
  multiplied = loop.make_optimizer(loop.TrainConfig(
      **base, learning_rate_multipliers=("^codes$=50", "kernel=3", "projection=7")))
  updates, _ = multiplied.update(grads, multiplied.init(params), params)

  def adamw_update(factor, name):
    plain = loop.make_optimizer(loop.TrainConfig(**dict(base, learning_rate=1e-3 * factor)))
    return plain.update(grads, plain.init(params), params)[0][name]

  np.testing.assert_allclose(updates["codes"], adamw_update(50, "codes"), rtol=1e-6)
  np.testing.assert_allclose(updates["projection"]["kernel"],
                             adamw_update(3, "projection")["kernel"], rtol=1e-6)
  np.testing.assert_allclose(updates["bert"]["dense"]["kernel"],
                             adamw_update(3, "bert")["dense"]["kernel"], rtol=1e-6)
  unruled = loop.make_optimizer(loop.TrainConfig(**base, learning_rate_multipliers=("codes=2",)))
  np.testing.assert_allclose(unruled.update(grads, unruled.init(params), params)[0]["bert"][
      "dense"]["kernel"], adamw_update(1, "bert")["dense"]["kernel"], rtol=1e-6)


@pytest.mark.parametrize("rule,message", [
    ("codes", "not REGEX=FACTOR"), ("codes=fast", "not REGEX=FACTOR"),
    ("=2", "non-empty REGEX"), ("codes=0", "FACTOR > 0"), ("(codes=2", "not REGEX=FACTOR")])
def test_a_malformed_learning_rate_multiplier_is_refused(rule, message):
  with pytest.raises(InputError, match=message):
    loop.learning_rate_multipliers(loop.TrainConfig(learning_rate_multipliers=(rule,)))


def test_a_learning_rate_multiplier_matching_no_parameter_is_refused(squad_block_store,
                                                                     tiny_bert_dir, tmp_path):
  task = tiny_ict_task(squad_block_store.directory, tiny_bert_dir)
  with pytest.raises(InputError, match=re.escape("'^poly_codes$' matches no parameter")):
    loop.train(task, loop.TrainConfig(workdir=str(tmp_path), num_train_steps=1, batch_size=8,
                                      learning_rate_multipliers=("^poly_codes$=5",)))
  assert not os.listdir(tmp_path)  # refused before the run directory is written

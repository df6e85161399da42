"""Decoder fine-tuning on (passage, question) pairs: the batch is expand's prompt then the
question, the loss a next-token cross-entropy on the question against PyTorch's logits, and a
trained run generates doc2query expansions (`expand --decoder_workdir`)."""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
import transformers

from orqa_realm.core import parallel
from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import build_block_store
from orqa_realm.data.documents import load_documents
from orqa_realm.encode import runs
from orqa_realm.encode.doc2query import block_prompt
from orqa_realm.modeling import partitioning
from orqa_realm.tasks.lm_finetune import pair_tokens
from orqa_realm.training import loop
from orqa_realm.tasks.base import StepContext
from tests.conftest import REPO_ROOT, subprocess_env
from tests.tasks.tiny_lm_finetune import tiny_lm_finetune_task

MESH = parallel.make_mesh()


@pytest.fixture(scope="module")
def small_store(tokenizer, small_squad, tmp_path_factory):
  """The articles of `small_squad` (their paragraphs hold its questions' gold blocks)."""
  return build_block_store(load_documents(small_squad), tokenizer,
                           tmp_path_factory.mktemp("stores") / "small", source=small_squad)


@pytest.fixture(scope="module")
def tiny_task(small_store, tiny_bert_dir, tiny_decoder_dir, small_squad):
  return tiny_lm_finetune_task(small_store.directory, tiny_bert_dir, tiny_decoder_dir,
                               small_squad)


def test_a_pair_is_expands_prompt_then_the_question(tiny_task):
  batch = tiny_task.train_batch(2, StepContext(MESH))
  tokenizer = tiny_task.tokenizer
  for row in range(8):
    length = int(batch.input_mask[row].sum())
    start = int(batch.target_start[row])
    assert start + int(batch.target_length[row]) == length
    assert batch.token_ids[row, length - 1] == tokenizer.eos_id
    question = tokenizer.decode(batch.token_ids[row, start:length])
    prompt = batch.token_ids[row, :start].tolist()
    # The prompt is expand's for the block it names (the example's positive).
    example = next(e for e in tiny_task.examples if e.question.strip() == question.strip())
    assert prompt == block_prompt(tokenizer, tiny_task.store.title(example.positive),
                                  tiny_task.store.text(example.positive),
                                  tiny_task.config.prompt, tiny_task.config.max_passage_tokens)


def test_long_questions_and_pairs_are_cut():
  prompt, question, eos = [5, 6, 7], list(range(10, 20)), 2
  assert pair_tokens(prompt, question, eos, 100, 4) == ([5, 6, 7, 10, 11, 12, 13], 3)
  assert pair_tokens(prompt, question[:2], eos, 100, 4) == ([5, 6, 7, 10, 11, 2], 3)
  assert pair_tokens(prompt, question, eos, 5, 4) == ([5, 6, 7, 10, 11], 3)
  with pytest.raises(InputError, match="lm_max_length=3"):
    pair_tokens(prompt, question, eos, 3, 4)


def test_loss_against_pytorch(tiny_task, tiny_decoder_dir):
  batch = tiny_task.train_batch(0, StepContext(MESH))
  params = partitioning.unbox(tiny_task.init_params(jax.random.key(0)))
  loss, metrics = tiny_task.loss(params, batch, jax.random.key(0), True)
  reference = transformers.LlamaForCausalLM.from_pretrained(tiny_decoder_dir).eval()
  with torch.no_grad():
    logits = reference(torch.as_tensor(batch.token_ids, dtype=torch.long),
                       attention_mask=torch.as_tensor(batch.input_mask)).logits.double().numpy()
  log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(
      -1, keepdims=True)) - logits.max(-1, keepdims=True)
  positions = np.arange(batch.token_ids.shape[1])
  targets = ((positions >= batch.target_start[:, None])
             & (positions < (batch.target_start + batch.target_length)[:, None]))[:, 1:]
  picked = np.take_along_axis(log_probs[:, :-1], batch.token_ids[:, 1:, None], axis=-1)[..., 0]
  np.testing.assert_allclose(loss, -picked[targets].mean(), rtol=1e-4)
  assert tiny_task.loss_weight(batch) == targets.sum()


def test_accumulated_gradients_equal_the_whole_batch(tiny_task):
  """The loss is a mean over question tokens, which micro-batches hold unequally: weighted by
  `loss_weight`, 4 micro-batches give the whole batch's loss and gradient."""
  batch = tiny_task.train_batch(0, StepContext(MESH))
  params = partitioning.unbox(tiny_task.init_params(jax.random.key(0)))
  rng = jax.random.key(0)
  whole = jax.jit(lambda p, b: loop.batch_gradients(tiny_task, p, b, rng))(params, batch)
  dealt = jax.jit(lambda p, b: loop.batch_gradients(tiny_task, p, b, rng, 4))(params, batch)
  np.testing.assert_allclose(dealt[0], whole[0], rtol=1e-5)
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(whole[2]))
  difference = max(float(np.abs(a - b).max())
                   for a, b in zip(jax.tree.leaves(whole[2]), jax.tree.leaves(dealt[2])))
  assert scale > 0 and difference <= 1e-5 * scale


@pytest.mark.slow
def test_a_trained_run_expands_a_store(small_store, tiny_bert_dir, tiny_decoder_dir, small_squad,
                                       tmp_path):
  """train --task=lm_finetune for 2 steps, then expand with its checkpoint: the expansions
  record the run and its step."""
  workdir = tmp_path / "lm"
  train = subprocess.run(
      [sys.executable, "-m", "orqa_realm.train", "--task=lm_finetune", f"--workdir={workdir}",
       f"--block_store={small_store.directory}", f"--bert={tiny_bert_dir}",
       f"--decoder={tiny_decoder_dir}", f"--train_qa_dataset={small_squad}",
       "--hard_negative_depth=20", "--max_passage_tokens=48", "--lm_max_length=128",
       "--batch_size=4", "--num_train_steps=2", "--learning_rate=1e-3", "--warmup_steps=1"],
      capture_output=True, text=True, env=subprocess_env(), cwd=REPO_ROOT, timeout=600)
  assert train.returncode == 0, train.stderr[-3000:]
  run = runs.restore_decoder_run(str(workdir), None, MESH)
  assert run.step == 2 and run.source == tiny_decoder_dir
  expand = subprocess.run(
      [sys.executable, "-m", "orqa_realm.expand", f"--block_store={small_store.directory}",
       f"--decoder_workdir={workdir}", "--questions_per_block=1", "--max_new_tokens=4",
       "--batch_blocks=64", "--max_passage_tokens=16", "--temperature=1"],
      capture_output=True, text=True, env=subprocess_env(), cwd=REPO_ROOT, timeout=600)
  assert expand.returncode == 0, expand.stderr[-3000:]
  manifest = json.loads(
      (pathlib.Path(small_store.directory) / "expansions" / "doc2query" / "manifest.json").read_text())
  assert manifest["generator"]["step"] == 2
  assert manifest["generator"]["decoder_workdir"] == str(workdir)


def test_another_kind_of_run_is_refused(tiny_ict_run):
  with pytest.raises(InputError, match="is a dual-encoder retriever, where a decoder LM run"):
    runs.restore_decoder_run(tiny_ict_run, None, MESH)

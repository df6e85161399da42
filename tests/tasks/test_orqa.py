"""The ORQA task: retrieval and labels of a batch, 4 devices against 1, and learning on SQuAD."""

import gzip
import itertools
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from orqa_realm.core import parallel
from orqa_realm.data.blocks import build_block_store
from orqa_realm.data.documents import load_documents
from orqa_realm.data.qa import question_indices, read_squad
from orqa_realm.data.reader_inputs import enumerate_spans, span_text
from orqa_realm.core.errors import InputError
from orqa_realm.index.bm25 import BM25Searcher
from orqa_realm.index.storage import IndexRoot
from orqa_realm.data.answers import has_answer, normalize_answer
from orqa_realm.encode import significance
from orqa_realm.modeling import retriever
from orqa_realm.modeling.hf_import import load_hf_bert
from orqa_realm.tasks.base import StepContext
from orqa_realm.training import loop
from tests.conftest import DEMO_SQUAD, REPO_ROOT, run_optimised, subprocess_env
from tests.tasks.sharding import run_on_four_devices
from tests.tasks.tiny_ict import TINY_RETRIEVER
from tests.tasks.tiny_orqa import publish_tiny_index, tiny_index_dir, tiny_orqa_task


@pytest.fixture(scope="module")
def tiny_task(squad_block_store, tiny_bert_dir, tmp_path_factory):
  return tiny_orqa_task(squad_block_store.directory, tiny_bert_dir,
                        tiny_index_dir(str(tmp_path_factory.mktemp("orqa"))))


def test_batch_retrieves_the_exact_top_c_and_labels_blocks_and_spans(tiny_task):
  task = tiny_task
  params = task.init_params(jax.random.key(0))
  batch = jax.device_get(task.train_batch(0, StepContext(parallel.make_mesh(), params=params)))
  examples = [task.train_examples[q] for q in question_indices(
      len(task.train_examples), 8, seed=0, step=0)]

  # The top c blocks of the query tower's embedding over the index, best first.
  query_embeddings = retriever.DualEncoder(TINY_RETRIEVER).apply(
      {"params": params["retriever"]}, batch.questions,
      method=retriever.DualEncoder.embed_queries)
  scores = np.asarray(query_embeddings) @ task.index.embeddings.T  # [batch, blocks]
  retrieved = np.take_along_axis(scores, batch.block_ids, axis=1)
  assert batch.block_ids.shape == (8, 300)
  assert np.all(np.diff(retrieved, axis=1) <= 1e-6)  # in order
  np.testing.assert_allclose(retrieved[:, -1], np.sort(scores, axis=1)[:, -300], atol=1e-5)
  np.testing.assert_array_equal(batch.block_embeddings, task.index.embeddings[batch.block_ids])

  # Block labels are has_answer on the block text.
  for ids, labels, example in zip(batch.block_ids, batch.block_has_answer, examples):
    assert labels.tolist() == [has_answer(task.store.text(b), example.answers) for b in ids]

  # The reader reads the top k blocks; every labelled span's text is an answer.
  spans = enumerate_spans(batch.block_mask.shape[-1], task.config.reader.max_span_width)
  for question, example in enumerate(examples):
    for rank in range(2):
      block = int(batch.block_ids[question, rank])
      offset = int(np.argmax(batch.block_mask[question, rank]))
      length = int(batch.block_mask[question, rank].sum())
      np.testing.assert_array_equal(batch.reader_inputs.token_ids[question, rank,
                                                                  offset:offset + length],
                                    task.store.token_ids(block)[:length])
      for span in np.flatnonzero(batch.span_is_answer[question, rank]):
        text = span_text(task.store.text(block), task.store.token_char_spans(block), offset,
                         int(spans.starts[span]), int(spans.ends[span]))
        assert normalize_answer(text) in {normalize_answer(a) for a in example.answers}


@pytest.mark.slow  # a minute: CI runs it in its second step
def test_four_devices_equal_one(squad_block_store, tiny_bert_dir, tmp_path):
  found = run_on_four_devices("tests.tasks.sharded_orqa_check", squad_block_store.directory,
                              tiny_bert_dir, str(tmp_path))
  assert found["same_reader_batch"]
  assert found["early_loss_one"] > 0 and found["full_loss_one"] > 0
  np.testing.assert_allclose(found["loss_four"], found["loss_one"], rtol=1e-6)
  # The early loss is a softmax over c = 300 blocks per question, summed over devices in
  # another order: measured 4.5e-5 of the gradient norm (ICT's in-batch softmax: under 1e-5).
  assert found["grad_difference"] <= 1e-4 * found["grad_scale"]


def test_an_index_from_a_checkpoint_needs_its_run(squad_block_store, tiny_bert_dir, tmp_path):
  index_dir = str(tmp_path / "index")
  IndexRoot(index_dir).publish(
      np.zeros((len(squad_block_store), 16), np.float32),
      store_fingerprint=squad_block_store.fingerprint, checkpoint_step=7,
      metadata=dict(retriever=TINY_RETRIEVER.to_dict(),
                    tokenizer_fingerprint=squad_block_store.tokenizer_fingerprint, run=None))
  with pytest.raises(InputError, match="checkpoint 7 of a training run"):
    tiny_orqa_task(squad_block_store.directory, tiny_bert_dir, index_dir)


def first_short_paragraph_questions(path, paragraphs: int, per_paragraph: int,
                                    max_chars: int = 500) -> str:
  """A SQuAD file with `per_paragraph` questions of each of the first `paragraphs` paragraphs of
  the slice's first article that are at most `max_chars` long (paragraph indices kept)."""
  with gzip.open(DEMO_SQUAD, "rt", encoding="utf-8") as f:
    dataset = json.load(f)
  article = dataset["data"][0]
  short = [i for i, p in enumerate(article["paragraphs"]) if len(p["context"]) <= max_chars]
  chosen = set(short[:paragraphs])
  article = dict(article, paragraphs=[
      dict(paragraph, qas=paragraph["qas"][:per_paragraph] if i in chosen else [])
      for i, paragraph in enumerate(article["paragraphs"])])
  with open(path, "w", encoding="utf-8") as f:
    json.dump(dict(dataset, data=[article]), f)
  return f"squad:{path}"


@pytest.mark.slow
def test_orqa_learns_on_squad(squad_block_store, squad_minilm_embeddings, minilm_dir, tmp_path):
  """A short CPU run on real SQuAD questions over the whole slice: the loss falls and the
  exact match on the training questions rises above the untrained model's. Real weights
  trained: at XLA's full optimisation, in a subprocess (tests/tasks/orqa_learning.py)."""
  block_embeddings, _, _ = squad_minilm_embeddings
  # The conftest embeddings: MiniLM as trained (mean pooling), over blocks cut to 64 wordpieces.
  config = retriever.RetrieverConfig(load_hf_bert(minilm_dir).config, projection_size=0,
                                     pooling="mean", share_encoders=True, block_format="joined",
                                     query_length=64, block_length=64)
  IndexRoot(str(tmp_path / "index")).publish(
      block_embeddings, store_fingerprint=squad_block_store.fingerprint, checkpoint_step=None,
      metadata=dict(retriever=config.to_dict(),
                    tokenizer_fingerprint=squad_block_store.tokenizer_fingerprint, run=None))
  questions = first_short_paragraph_questions(tmp_path / "train.json", paragraphs=8,
                                              per_paragraph=2)
  assert len(read_squad(questions.partition(":")[2])) == 16
  found = run_optimised("tests.tasks.orqa_learning", str(squad_block_store.directory),
                        minilm_dir, str(tmp_path / "index"), questions, str(tmp_path / "run"))
  assert found == dict(step=24)
  with open(tmp_path / "run" / "metrics.jsonl", encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  losses = [r["loss"] for r in records if "loss" in r]
  evaluations = [r for r in records if "eval_exact_match" in r]
  assert [r["step"] for r in evaluations] == [0, 24]
  assert np.mean(losses[-6:]) < 0.8 * np.mean(losses[:6]), losses
  assert evaluations[1]["eval_exact_match"] > evaluations[0]["eval_exact_match"], evaluations


def test_evaluate_cli_answers_with_a_trained_run(tiny_task, tiny_bert_dir, tmp_path):
  config = loop.TrainConfig(workdir=str(tmp_path / "run"), num_train_steps=2, batch_size=8,
                            checkpoint_every_steps=1000, async_checkpoints=False)
  loop.train(tiny_task, config)
  questions = first_short_paragraph_questions(tmp_path / "questions.json", paragraphs=5,
                                              per_paragraph=2)
  command = [sys.executable, "-m", "orqa_realm.evaluate",
             f"--block_store={tiny_task.store.directory}", f"--bert={tiny_bert_dir}",
             f"--reader_workdir={tmp_path / 'run'}", f"--eval_qa_dataset={questions}",
             "--eval_recall_ks=1,5"]
  dense = [f"--workdir={tmp_path / 'run'}", "--embed_dtype=float32"]
  result = subprocess.run(
      [*command, *dense, f"--index_dir={tiny_task.config.index_dir}",
       f"--output_dir={tmp_path / 'eval'}"],
      cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / "eval" / "metrics.json") as f:
    metrics = json.load(f)
  assert metrics["num_queries"] == 10 and metrics["reader_step"] == 2
  assert 0.0 <= metrics["exact_match"] <= 1.0 and metrics["reader_beam_size"] == 2
  with open(tmp_path / "eval" / "predictions.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert len(records) == 10 and all(len(r["top_blocks"]) == 2 for r in records)
  assert all(r["prediction"] in tiny_task.store.text(r["block"]) for r in records)
  per_query = significance.read_per_query(str(tmp_path / "eval"))
  np.testing.assert_array_equal(per_query.values["exact_match"], [r["correct"] for r in records])

  # The same reader over BM25's top blocks, ranking spans by itself (BM25 scores are not on the
  # scale of its retriever's).
  bm25_run = subprocess.run(
      [*command, "--retrieval=bm25", f"--output_dir={tmp_path / 'bm25_eval'}"],
      cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
  assert bm25_run.returncode == 0, bm25_run.stderr[-3000:]
  with open(tmp_path / "bm25_eval" / "metrics.json") as f:
    metrics = json.load(f)
  assert metrics["retrieval"] == "bm25" and not metrics["reader_adds_retrieval_scores"]
  with open(tmp_path / "bm25_eval" / "predictions.jsonl") as f:
    records = [json.loads(line) for line in f]
  expected = BM25Searcher.build(tiny_task.store).search_texts([r["question"] for r in records], 2)
  assert [[b["block"] for b in r["top_blocks"]] for r in records] == expected.ids.tolist()
  assert all(r["block"] in expected.ids[i] for i, r in enumerate(records))

  # An index other than the one the run was trained over is refused.
  other_index = tmp_path / "other_index"
  IndexRoot(str(other_index)).publish(
      tiny_task.index.embeddings, store_fingerprint=tiny_task.store.fingerprint,
      checkpoint_step=3, metadata=dict(retriever=TINY_RETRIEVER.to_dict(),
                                       tokenizer_fingerprint=tiny_task.tokenizer.fingerprint,
                                       run=None))
  refused = subprocess.run(
      [*command, *dense, f"--index_dir={other_index}", f"--output_dir={tmp_path / 'eval2'}"],
      cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
  assert refused.returncode != 0 and (
      "the run was trained over blocks embedded by (checkpoint, run id) (None, None), this index "
      "by (3, None)") in refused.stderr

  # A new corpus embedded by the same block encoder is answered over (the store must be the
  # index's own, as always).
  new_store = build_block_store(itertools.islice(load_documents(f"squad:{DEMO_SQUAD}"), 80),
                                tiny_task.tokenizer, tmp_path / "new_corpus",
                                source="the first 80 paragraphs")
  new_index = str(tmp_path / "new_corpus_index")
  publish_tiny_index(new_store.directory, new_index)
  on_new_store = [f"--block_store={new_store.directory}" if arg.startswith("--block_store=")
                  else arg for arg in command]
  accepted = subprocess.run(
      [*on_new_store, *dense, f"--index_dir={new_index}", f"--output_dir={tmp_path / 'eval3'}"],
      cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
  assert accepted.returncode == 0, accepted.stderr[-3000:]
  with open(tmp_path / "eval3" / "metrics.json") as f:
    metrics = json.load(f)
  assert metrics["num_blocks"] == len(new_store) < len(tiny_task.store)
  with open(tmp_path / "eval3" / "predictions.jsonl") as f:
    assert all(r["prediction"] in new_store.text(r["block"]) for r in map(json.loads, f))

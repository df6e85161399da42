"""`train` on bad flags, stores, questions and directories: each a one-line error naming what to
change. (A broken checkpoint on resume: tests/tasks/test_ict_training.py.)"""

import json

from tests.bad_input.cli import assert_refused, run_command
from tests.tasks.tiny_ict import tiny_ict_task


def train_ict(workdir, block_store, bert_dir, *extra):
  return run_command("train", "--task=ict", f"--workdir={workdir}", f"--block_store={block_store}",
                     f"--bert={bert_dir}", "--from_scratch", "--projection_size=16",
                     "--query_length=16", "--block_length=48", "--batch_size=8",
                     "--num_train_steps=1", *extra)


def test_a_flag_of_another_task_is_refused_even_naming_a_missing_path(squad_block_store,
                                                                      tiny_bert_dir, tmp_path):
  assert_refused(train_ict(tmp_path / "run", squad_block_store.directory, tiny_bert_dir,
                           "--retriever_workdir=/nonexistent"),
                 "--retriever_workdir is not read by `train --task=ict`")
  assert not (tmp_path / "run").exists()


def test_a_missing_run_to_start_from_is_named(squad_block_store, tiny_bert_dir, tmp_path):
  result = run_command("train", "--task=dpr", f"--workdir={tmp_path / 'run'}",
                       f"--block_store={squad_block_store.directory}", f"--bert={tiny_bert_dir}",
                       "--retriever_workdir=/nonexistent")
  assert_refused(result, "/nonexistent: not a training run directory: no run.json")


def test_a_store_too_small_for_the_held_out_split_says_what_to_change(small_store, tiny_bert_dir,
                                                                      tmp_path):
  assert_refused(train_ict(tmp_path / "run", small_store, tiny_bert_dir),
                 "field 'ict_heldout_fraction'", "the held-out split (an epoch of 2 blocks has",
                 "fewer than one batch of 8", "pass --ict_heldout_fraction=0.27 or more",
                 "--ict_eval_batches=0")
  # The advice works: the held-out split then fills an evaluation batch.
  task = tiny_ict_task(small_store, tiny_bert_dir, heldout_fraction=0.27)
  assert task.eval_sampler.batch(0).queries.token_ids.shape[0] == 8


def test_a_squad_paragraph_without_questions_is_named(squad_block_store, tiny_bert_dir, tmp_path):
  squad = tmp_path / "dev.json"
  squad.write_text(json.dumps({"data": [{"title": "Oxygen", "paragraphs": [
      {"context": "Oxygen is an element.", "qas": [
          {"id": "q1", "question": "What is oxygen?", "answers": [{"text": "an element"}]}]},
      {"context": "It was found in 1774."}]}]}))
  assert_refused(train_ict(tmp_path / "run", squad_block_store.directory, tiny_bert_dir,
                           f"--eval_qa_dataset=squad:{squad}"),
                 f"{squad} [Oxygen, paragraph 1], field 'qas': missing field")


def test_a_question_file_without_questions_is_refused(squad_block_store, tiny_bert_dir, tmp_path):
  empty = tmp_path / "nq.jsonl"
  empty.write_text("\n")
  assert_refused(train_ict(tmp_path / "run", squad_block_store.directory, tiny_bert_dir,
                           f"--eval_qa_dataset=nq_open:{empty}"),
                 f"nq_open:{empty}: holds no questions")


def test_an_unwritable_workdir_is_named_before_training(squad_block_store, tiny_bert_dir,
                                                        tmp_path):
  (tmp_path / "file").write_text("")
  assert_refused(train_ict(tmp_path / "file" / "run", squad_block_store.directory, tiny_bert_dir),
                 f"{tmp_path / 'file' / 'run'}: cannot write here")

"""`embed` into an index root that is not its own, onto an unwritable path, from a broken
checkpoint: refused before any embedding, naming the root, both retrievers, the checkpoint."""

import shutil

from orqa_realm.index.storage import IndexRoot
from tests.bad_input.cli import assert_refused, run_command


def embed(block_store, index_dir, *model):
  return run_command("embed", f"--block_store={block_store}", f"--index_dir={index_dir}",
                     "--embed_dtype=float32", *model)


def test_embeddings_of_another_retriever_are_refused_at_publish(squad_block_store, tiny_bert_dir,
                                                                tiny_run_index):
  before = IndexRoot(tiny_run_index).versions()
  result = embed(squad_block_store.directory, tiny_run_index, f"--bert={tiny_bert_dir}",
                 "--projection_size=0", "--block_length=48", "--query_length=16")
  assert_refused(result, f"{tiny_run_index}, field 'index_dir': the index root holds embeddings "
                 "of another retriever (version 1: {", '"projection_size": 16',
                 '"projection_size": 0', "projection_size: saved 16, now 0",
                 "use another --index_dir")
  assert IndexRoot(tiny_run_index).versions() == before


def test_embeddings_of_another_store_are_refused_at_publish(small_store, tiny_ict_run,
                                                            tiny_run_index):
  result = embed(small_store, tiny_run_index, f"--workdir={tiny_ict_run}")
  assert_refused(result, "the index root holds embeddings of another block store")


def test_an_unwritable_index_root_is_named_before_embedding(squad_block_store, tiny_ict_run,
                                                           tmp_path):
  (tmp_path / "file").write_text("")
  assert_refused(embed(squad_block_store.directory, tmp_path / "file",
                       f"--workdir={tiny_ict_run}"),
                 f"{tmp_path / 'file'}: cannot write here: a file, not a directory")


def test_a_broken_checkpoint_is_named_with_the_others(squad_block_store, tiny_ict_run, tmp_path):
  run = shutil.copytree(tiny_ict_run, tmp_path / "run")
  for data_file in (run / "checkpoints" / "2" / "default" / "ocdbt.process_0" / "d").iterdir():
    data_file.unlink()
  result = embed(squad_block_store.directory, tmp_path / "index", f"--workdir={run}")
  assert_refused(result, f"{run / 'checkpoints' / '2'}: checkpoint 2 does not restore (",
                 "the run's other checkpoints are [")

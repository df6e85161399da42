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


def test_a_grown_store_is_embedded_by_the_indexs_own_checkpoint_only(squad_block_store,
                                                                    tiny_ict_run, tiny_run_index,
                                                                    tmp_path):
  """preprocess --grow_from, then embed --grow: another checkpoint than the one that embedded
  the index is refused; the index's own embeds only the added blocks."""
  index_dir = shutil.copytree(tiny_run_index, tmp_path / "index")
  (tmp_path / "new.jsonl").write_text(
      '{"id": "new-1", "title": "Tiny", "text": "A new document. It has two sentences."}\n'
      '{"id": "new-2", "title": "Tinier", "text": "Another one."}\n')
  grown = tmp_path / "grown"
  refused = run_command("preprocess", f"--grow_from={squad_block_store.directory}",
                        f"--corpus=jsonl:{tmp_path / 'new.jsonl'}", f"--output_dir={grown}",
                        "--max_block_length=128")
  assert_refused(refused, "field 'max_block_length': --max_block_length is the grown store's own")
  result = run_command("preprocess", f"--grow_from={squad_block_store.directory}",
                       f"--corpus=jsonl:{tmp_path / 'new.jsonl'}", f"--output_dir={grown}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert '"added_blocks": 2' in result.stdout
  [newest] = IndexRoot(str(index_dir)).versions()[-1:]
  assert_refused(embed(grown, index_dir, f"--workdir={tiny_ict_run}", "--checkpoint_step=1",
                       "--grow"),
                 f"the index's newest version was embedded by checkpoint 2 of the run "
                 f"{tiny_ict_run}; the new blocks would be embedded by checkpoint 1")
  result = embed(grown, index_dir, f"--workdir={tiny_ict_run}", "--grow")
  assert result.returncode == 0, result.stderr[-3000:]
  assert '"embedded_blocks": 2' in result.stdout
  version = IndexRoot(str(index_dir)).latest()
  assert version.version == newest + 1 and version.num_rows == len(squad_block_store) + 2

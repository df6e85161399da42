"""`refresh` on a directory that is not a run, an index root of another retriever, an unwritable
root: refused at start (not on the refresher's thread, where errors are only logged)."""

import numpy as np

from orqa_realm.index.storage import IndexRoot
from orqa_realm.modeling.bert import BertConfig
from orqa_realm.modeling.retriever import RetrieverConfig
from tests.bad_input.cli import assert_refused, run_command
from tests.tasks.tiny_ict import TINY_BERT


def refresh(workdir, index_dir):
  return run_command("refresh", f"--workdir={workdir}", f"--index_dir={index_dir}",
                     "--embed_dtype=float32")


def test_a_directory_that_is_not_a_run_is_named(tmp_path):
  assert_refused(refresh(tmp_path, tmp_path / "index"),
                 f"{tmp_path}: not a training run directory: no run.json")


def test_an_index_root_of_another_retriever_is_refused_at_start(squad_block_store, tiny_ict_run,
                                                               tmp_path):
  other = RetrieverConfig(BertConfig(**dict(TINY_BERT.to_dict(), num_hidden_layers=1)),
                          projection_size=16)
  root = IndexRoot(str(tmp_path / "index"))
  root.publish(np.zeros((len(squad_block_store), 16), np.float32),
               store_fingerprint=squad_block_store.fingerprint, checkpoint_step=None,
               metadata=dict(retriever=other.to_dict(), run=None,
                             tokenizer_fingerprint=squad_block_store.tokenizer_fingerprint))
  assert_refused(refresh(tiny_ict_run, root.root),
                 "the index root holds embeddings of another retriever",
                 "bert.num_hidden_layers: saved 1, now 2")
  assert root.versions() == [1]


def test_an_unwritable_index_root_is_named_at_start(tiny_ict_run, tmp_path):
  (tmp_path / "file").write_text("")
  assert_refused(refresh(tiny_ict_run, tmp_path / "file"),
                 f"{tmp_path / 'file'}: cannot write here: a file, not a directory")

"""`evaluate` with a query encoder that is not the index's, flags it does not read, bad question
files, a crafted ScaNN index and an unwritable output: refused, or taken from the run, never a
silently wrong number."""

import json

import pytest

from orqa_realm.index.scann_index import ScannConfig
from orqa_realm.index.storage import IndexRoot, load_embeddings
from tests.bad_input.cli import assert_refused, run_command
from tests.index.code_running_pickle import code_running_pickle
from tests.conftest import DEMO_SQUAD


def evaluate(block_store, output_dir, *extra):
  return run_command("evaluate", f"--block_store={block_store}", f"--output_dir={output_dir}",
                     "--embed_dtype=float32", *extra)


def test_the_query_encoder_settings_come_from_the_run_and_are_recorded(
    squad_block_store, tiny_ict_run, tiny_run_index, tmp_path):
  result = evaluate(squad_block_store.directory, tmp_path / "eval", f"--workdir={tiny_ict_run}",
                    f"--index_dir={tiny_run_index}", f"--eval_qa_dataset=squad:{DEMO_SQUAD}",
                    "--eval_questions=20")
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert metrics["query_encoder"]["query_length"] == 16  # the run's, not the flag's default
  assert metrics["query_encoder"]["pooling"] == "pooled"
  assert metrics["index_run"]["workdir"] == tiny_ict_run and metrics["query_checkpoint_step"] == 2


def test_another_runs_query_encoder_at_the_same_step_is_refused(
    squad_block_store, tiny_ict_run, other_tiny_run, tiny_run_index, tmp_path):
  result = evaluate(squad_block_store.directory, tmp_path / "eval", f"--workdir={other_tiny_run}",
                    f"--index_dir={tiny_run_index}", f"--eval_qa_dataset=squad:{DEMO_SQUAD}")
  assert_refused(result, f"the index was embedded from the run {tiny_ict_run} (id ",
                 f"not from {other_tiny_run} (id ", "pass that run, or re-embed with this one")
  assert not (tmp_path / "eval" / "metrics.json").exists()


def test_pretrained_weights_are_refused_for_an_index_of_a_run(squad_block_store, tiny_bert_dir,
                                                              tiny_run_index, tmp_path):
  result = evaluate(squad_block_store.directory, tmp_path / "eval", f"--bert={tiny_bert_dir}",
                    f"--index_dir={tiny_run_index}", f"--eval_qa_dataset=squad:{DEMO_SQUAD}")
  assert_refused(result, "the index was embedded from checkpoint 2 of a training run: pass that "
                 "run as --workdir")


def test_flags_of_other_retrievals_are_refused(squad_block_store, tiny_run_index, tmp_path):
  result = evaluate(squad_block_store.directory, tmp_path / "eval", f"--index_dir={tiny_run_index}",
                    f"--eval_qa_dataset=squad:{DEMO_SQUAD}", f"--bm25_dir={tmp_path / 'bm25'}",
                    "--hybrid_alpha=5")
  assert_refused(result, "is not read by `evaluate --retrieval=dense`")


@pytest.mark.parametrize("name, content, expected", [
    ("dev.json", json.dumps({"data": [{"title": "Oxygen", "paragraphs": [
        {"context": "Oxygen.", "qas": [{"id": "q", "question": "What?", "answers": []}]}]}]}),
     "[Oxygen, paragraph 0, question q], field 'answers': empty answer list"),
    ("dev.json", json.dumps({"data": [{"title": "Oxygen"}]}),
     "[Oxygen], field 'paragraphs': missing field"),
    ("nq.jsonl", "", "holds no questions"),
    ("nq.jsonl.gz", b"\x1f\x8b\x08\x00garbage", "damaged or truncated gzip stream"),
], ids=["squad_no_answer", "squad_no_paragraphs", "nq_empty", "nq_bad_gzip"])
def test_a_bad_question_file_is_located_before_any_model_is_loaded(
    squad_block_store, tiny_run_index, tmp_path, name, content, expected):
  path = tmp_path / name
  if isinstance(content, bytes):
    path.write_bytes(content)
  else:
    path.write_text(content)
  data_format = "squad" if name.startswith("dev") else "nq_open"
  result = evaluate(squad_block_store.directory, tmp_path / "eval",
                    f"--index_dir={tiny_run_index}", f"--eval_qa_dataset={data_format}:{path}")
  assert_refused(result, str(path), expected)


def test_beir_queries_with_a_byte_that_is_not_utf8_are_located(squad_block_store, tiny_run_index,
                                                               tmp_path):
  queries, qrels = tmp_path / "queries.tsv", tmp_path / "qrels.txt"
  queries.write_bytes(b"q1\twhat is oxygen\nq2\tcaf\xe9\n")
  qrels.write_text("q1 0 d1 1\n")
  result = evaluate(squad_block_store.directory, tmp_path / "eval",
                    f"--index_dir={tiny_run_index}", f"--eval_beir_queries={queries}",
                    f"--eval_beir_qrels={qrels}")
  assert_refused(result, f"{queries}, line 2: not UTF-8: byte b'\\xe9'")


def test_an_unwritable_output_directory_is_named_first(squad_block_store, tiny_run_index,
                                                       tmp_path):
  (tmp_path / "file").write_text("")
  assert_refused(evaluate(squad_block_store.directory, tmp_path / "file",
                          f"--index_dir={tiny_run_index}",
                          f"--eval_qa_dataset=squad:{DEMO_SQUAD}"),
                 f"{tmp_path / 'file'}: cannot write here")


def test_a_crafted_scann_index_runs_no_code(squad_block_store, tiny_ict_run, tiny_run_index,
                                           tmp_path):
  """A ScaNN version whose directory holds a pickle (ScaNN's doc-id file) or an asset path
  leading out of it is refused; nothing in it is unpickled."""
  indexed = IndexRoot(tiny_run_index).latest()
  root = IndexRoot(str(tmp_path / "index"))
  version = root.publish(load_embeddings(indexed), store_fingerprint=indexed.store_fingerprint,
                         checkpoint_step=indexed.checkpoint_step, scann_config=ScannConfig(),
                         metadata=indexed.metadata)
  scann_dir = tmp_path / "index" / "versions" / f"{version.version:06d}" / "scann"
  marker = tmp_path / "code_ran"
  (scann_dir / "scann_docids.pkl").write_bytes(code_running_pickle(marker))
  common = [f"--workdir={tiny_ict_run}", f"--index_dir={root.root}", "--index_backend=scann",
            f"--eval_qa_dataset=squad:{DEMO_SQUAD}", "--eval_questions=5"]
  assert_refused(evaluate(squad_block_store.directory, tmp_path / "eval", *common),
                 f"{scann_dir}: holds scann_docids.pkl, which ScaNN would unpickle")
  assert not marker.exists()

  (scann_dir / "scann_docids.pkl").unlink()
  assets = scann_dir / "scann_assets.pbtxt"
  assets.write_text(assets.read_text().replace('"dataset.npy"', '"../../../../outside.npy"'))
  assert_refused(evaluate(squad_block_store.directory, tmp_path / "eval", *common),
                 "field 'asset_path': asset '../../../../outside.npy' lies outside the index "
                 "directory")

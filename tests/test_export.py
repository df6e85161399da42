"""`python -m orqa_realm.export` of the tiny pipeline's runs: the ORQA run's question encoder
gives, in sentence-transformers, the embeddings the system searches with; its reader BERT and the
retriever's shared encoder load in `transformers`; a directory it did not write is refused."""

import json
import subprocess

import numpy as np

from tests.bad_input.cli import assert_refused, run_command

TEXTS = ["Who won Super Bowl 50?", "Where did the Normans come from?"]


def export(workdir, output_dir) -> subprocess.CompletedProcess:
  return run_command("export", f"--workdir={workdir}", f"--output_dir={output_dir}")


def test_an_orqa_run_exports_its_question_encoder_and_reader(pipeline_workdir, tiny_system, tmp_path):
  import transformers
  from sentence_transformers import SentenceTransformer

  result = export(pipeline_workdir / "reader", tmp_path / "orqa")
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / "orqa" / "export.json") as f:
    record = json.load(f)
  assert record["task"] == "orqa" and record["checkpoint_step"] == 8
  assert set(record["towers"]) == {"query_encoder"} and record["reader"]["path"] == "reader"
  exported = SentenceTransformer(str(tmp_path / "orqa" / "query_encoder"), device="cpu")
  np.testing.assert_allclose(exported.encode(TEXTS, convert_to_numpy=True),
                             tiny_system.searcher.embed(TEXTS), atol=1e-4)
  reader = transformers.BertModel.from_pretrained(str(tmp_path / "orqa" / "reader"))
  assert reader.config.max_position_embeddings == 512


def test_a_retriever_with_shared_towers_exports_one_encoder(pipeline_workdir, tmp_path):
  result = export(pipeline_workdir / "retriever", tmp_path / "ict")
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / "ict" / "export.json") as f:
    record = json.load(f)
  assert set(record["towers"]) == {"encoder"}
  assert record["towers"]["encoder"]["max_length"] == record["retriever"]["block_length"]
  # Exporting again replaces the export; another directory is never replaced.
  assert export(pipeline_workdir / "retriever", tmp_path / "ict").returncode == 0
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "notes.txt").write_text("keep")
  assert_refused(export(pipeline_workdir / "retriever", tmp_path / "mine"),
                 "holds files this project did not write")
  assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"

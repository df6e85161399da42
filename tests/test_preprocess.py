"""`python -m orqa_realm.preprocess` end to end, as a user runs it."""

import json
import subprocess
import sys

from orqa_realm.data.blocks import BlockStore
from tests.conftest import REPO_ROOT


def run_preprocess(*args):
  return subprocess.run([sys.executable, "-m", "orqa_realm.preprocess", *args], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=300)


def test_builds_a_store_from_jsonl(tmp_path):
  corpus = tmp_path / "corpus.jsonl"
  corpus.write_text("\n".join(json.dumps(d) for d in [
      {"id": "a", "title": "Warsaw", "text": "Warsaw is the capital of Poland. It lies on the Vistula."},
      {"id": "b", "title": "Oxygen", "text": "Oxygen is a chemical element with symbol O."},
  ]) + "\n")
  result = run_preprocess(f"--corpus=jsonl:{corpus}", f"--output_dir={tmp_path / 'store'}",
                          "--max_block_length=16", "--max_title_length=4")
  assert result.returncode == 0, result.stderr
  assert '"num_blocks": ' in result.stdout
  store = BlockStore(tmp_path / "store")
  assert [store.document_id(b) for b in range(len(store))][0] == "a"
  assert store.max_block_length == 16 and store.manifest["source"] == f"jsonl:{corpus}"


def test_bad_input_gives_a_located_message_not_a_traceback(tmp_path):
  corpus = tmp_path / "corpus.jsonl"
  corpus.write_text('{"title": "T", "text": "ok"}\n{"title": "T", "txt": "typo"}\n')
  result = run_preprocess(f"--corpus=jsonl:{corpus}", f"--output_dir={tmp_path / 'store'}")
  assert result.returncode != 0
  assert f"error: {corpus}, line 2, field 'text': missing field" in result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "store").exists()

"""What the bad-input tests share: an index embedded from the tiny ICT run, another run of the
same architecture, and a block store too small for ICT's default split."""

import json
import shutil
import uuid

import pytest

from tests.bad_input.cli import run_command


@pytest.fixture(scope="session")
def tiny_run_index(squad_block_store, tiny_ict_run, tmp_path_factory) -> str:
  """An index root: the SQuAD store embedded (by `embed`) from the tiny ICT run's checkpoint."""
  index_dir = tmp_path_factory.mktemp("bad_input") / "index"
  result = run_command("embed", f"--block_store={squad_block_store.directory}",
                       f"--workdir={tiny_ict_run}", f"--index_dir={index_dir}",
                       "--embed_dtype=float32")
  assert result.returncode == 0, result.stderr[-3000:]
  return str(index_dir)


@pytest.fixture(scope="session")
def other_tiny_run(tiny_ict_run, tmp_path_factory) -> str:
  """Another run of the same architecture at the same step: the tiny ICT run copied under
  another run id (as a second training run would draw; its weights do not matter here)."""
  workdir = shutil.copytree(tiny_ict_run, tmp_path_factory.mktemp("runs") / "other_tiny_ict")
  description = json.loads((workdir / "run.json").read_text())
  (workdir / "run.json").write_text(json.dumps(dict(description, run_id=uuid.uuid4().hex)))
  return str(workdir)


@pytest.fixture(scope="session")
def small_store(tmp_path_factory) -> str:
  """A block store of 30 one-block documents (MiniLM's tokenizer, as the tiny BERT's)."""
  directory = tmp_path_factory.mktemp("small")
  corpus = directory / "corpus.jsonl"
  corpus.write_text("".join(json.dumps({"title": f"Topic {i}", "text": " ".join(
      f"Sentence {j} of document {i} says something." for j in range(4))}) + "\n"
                            for i in range(30)))
  result = run_command("preprocess", f"--corpus=jsonl:{corpus}",
                       f"--output_dir={directory / 'store'}")
  assert result.returncode == 0, result.stderr[-3000:]
  return str(directory / "store")

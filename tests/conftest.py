"""Shared fixtures: the packaged MiniLM weights, the real data sets, the bundled SQuAD slice."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

# One persistent XLA compilation cache for the test session and the commands it runs as
# subprocesses (they inherit the environment), set before anything imports jax. Dozens of tests
# compile the same tiny train steps, embedders and searchers (each `loop.train` traces its own
# step); compiling dominated their time (a 4-step tiny ICT run: 22 s, 3 s from the cache).
# A fresh directory per session, unless the caller names one.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="orqa_realm_xla_cache_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# XLA's LLVM optimisation is most of the compile time of the tiny test programs, and each runs a
# few times at most: at level 0 two tasks' four-device check took 20.6 s instead of 41.5 s, with
# the same losses. The few tests that train real weights pay for it (MiniLM's cross-encoder
# learning run: 117 s alone at full optimisation, 411 s at level 0 beside a second worker): they
# run their training in a subprocess without it (`run_optimised`). The tests' own processes and
# their other subprocesses all take this flag.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = " ".join(filter(None, (os.environ.get("XLA_FLAGS"), TEST_XLA_FLAGS)))

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO_SQUAD = REPO_ROOT / "demo_data" / "squad" / "dev-v1.1.public36.json.gz"
SHARED_DATA = pathlib.Path(os.environ.get("ORQA_REALM_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def subprocess_env(*, optimised: bool = False, **extra) -> dict[str, str]:
  """This environment for a test's subprocess, with the repository importable and XLA's flags
  the tests' own (TEST_XLA_FLAGS, unless `optimised`) and `extra`'s, not inherited ones:
  device counts are the test's choice."""
  env = {name: value for name, value in os.environ.items() if name != "XLA_FLAGS"}
  flags = " ".join(filter(None, (None if optimised else TEST_XLA_FLAGS,
                                 extra.pop("XLA_FLAGS", None))))
  return dict(env, PYTHONPATH=str(REPO_ROOT), XLA_FLAGS=flags, **extra)


def run_json_module(module: str, *args: str, env: dict[str, str], timeout: float) -> dict:
  """Runs `python -m module args...` in `env` and returns the JSON object its last output line
  holds (what the module found, for the test to assert on)."""
  result = subprocess.run(
      [sys.executable, "-m", module, *args], cwd=REPO_ROOT, capture_output=True, text=True,
      timeout=timeout, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def run_optimised(module: str, *args: str, timeout: float = 900) -> dict:
  """`run_json_module` at XLA's full optimisation. For the few tests that train real weights,
  where running the steps, not compiling them, is the time: level 0 would triple it. The module
  must not import this file, which sets the tests' XLA flags before XLA starts."""
  return run_json_module(module, *args, env=subprocess_env(optimised=True), timeout=timeout)


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long tests, run in CI's second step")


def pytest_unconfigure(config):
  if _OWN_CACHE:
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@contextlib.contextmanager
def built_once(tmp_path_factory, name: str):
  """A directory for a session fixture's costly output, held by one test process at a time.

  Under pytest-xdist (CI runs the suite on 2 workers) the workers share it, under a file lock:
  the first builds into it and the others find it built. Without xdist it is a fresh temporary
  directory. The fixture checks what is already there."""
  if "PYTEST_XDIST_WORKER" not in os.environ:
    yield tmp_path_factory.mktemp(name)
    return
  from filelock import FileLock

  # The workers' temporary roots are siblings under this session's own directory.
  directory = tmp_path_factory.getbasetemp().parent / name
  with FileLock(f"{directory}.lock"):
    directory.mkdir(exist_ok=True)
    yield directory


@pytest.fixture(scope="session")
def minilm_dir() -> str:
  from orqa_realm.data.pretrained import resolve_model_dir

  # No skip: the README's install step installs it, and a missing model must fail loudly.
  return resolve_model_dir("minilm")


@pytest.fixture(scope="session")
def tokenizer(minilm_dir):
  from orqa_realm.data.tokenization import Tokenizer

  return Tokenizer(minilm_dir)


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """The real data sets in ../shared/data; CI sets ORQA_REALM_REQUIRE_SHARED_DATA=1 so a missing
  folder fails there instead of skipping."""
  if not SHARED_DATA.is_dir():
    if os.environ.get("ORQA_REALM_REQUIRE_SHARED_DATA") == "1":
      pytest.fail(f"{SHARED_DATA} is missing")
    pytest.skip(f"real data sets not found at {SHARED_DATA}")
  return SHARED_DATA


@pytest.fixture(scope="session")
def squad_block_store(tokenizer, tmp_path_factory):
  """The bundled SQuAD slice (36 articles) as a block store of 288-wordpiece blocks."""
  from orqa_realm.data.blocks import build_block_store
  from orqa_realm.data.documents import load_documents

  spec = f"squad:{DEMO_SQUAD}"
  return build_block_store(load_documents(spec), tokenizer,
                           tmp_path_factory.mktemp("stores") / "squad", source=spec)


@pytest.fixture(scope="session")
def salient_squad_store(tokenizer, tmp_path_factory):
  """The first 60 paragraphs (two articles) of the bundled SQuAD slice as a block store with its
  salient spans (spaCy, the `ner` extra)."""
  import itertools

  pytest.importorskip("spacy")
  from orqa_realm.data import salient_spans
  from orqa_realm.data.blocks import build_block_store
  from orqa_realm.data.documents import load_documents

  spec = f"squad:{DEMO_SQUAD}"
  store = build_block_store(itertools.islice(load_documents(spec), 60), tokenizer,
                            tmp_path_factory.mktemp("stores") / "squad_salient", source=spec)
  salient_spans.annotate_store(store)
  return store


@pytest.fixture(scope="session")
def tiny_bert_dir(minilm_dir, tmp_path_factory) -> str:
  """MiniLM's tokenizer with a tiny random architecture (tests/tasks/tiny_ict.py)."""
  from tests.tasks.tiny_ict import make_tiny_bert_dir

  return make_tiny_bert_dir(minilm_dir, str(tmp_path_factory.mktemp("tiny_bert")))


@pytest.fixture(scope="session")
def tiny_decoder_dir(tmp_path_factory) -> str:
  """SmolLM2's tokenizer with a tiny random llama (tests/modeling/tiny_decoder.py)."""
  from tests.modeling.tiny_decoder import make_tiny_decoder_dir

  return make_tiny_decoder_dir(str(tmp_path_factory.mktemp("tiny_decoder")))


@pytest.fixture(scope="session")
def tiny_ict_run(squad_block_store, tiny_bert_dir, tmp_path_factory) -> str:
  """The workdir of a 2-step ICT run of the tiny retriever (tests/tasks/tiny_ict.py)."""
  from orqa_realm.training import loop
  from tests.tasks.tiny_ict import tiny_ict_task

  workdir = str(tmp_path_factory.mktemp("runs") / "tiny_ict")
  loop.train(tiny_ict_task(squad_block_store.directory, tiny_bert_dir),
             loop.TrainConfig(workdir=workdir, num_train_steps=2, batch_size=8,
                              async_checkpoints=False))
  return workdir


@pytest.fixture(scope="session")
def small_squad(tmp_path_factory) -> str:
  """Articles 2-4 of the bundled SQuAD slice (627 questions) as a SQuAD file, for tests whose
  cost grows with the training questions (a teacher scores each one's candidates)."""
  with gzip.open(DEMO_SQUAD, "rt", encoding="utf-8") as f:
    squad = json.load(f)
  path = tmp_path_factory.mktemp("small_squad") / "small.json"
  path.write_text(json.dumps(dict(squad, data=squad["data"][1:4])), encoding="utf-8")
  return f"squad:{path}"


@pytest.fixture(scope="session")
def tiny_cross_encoder_run(squad_block_store, tiny_bert_dir, tmp_path_factory) -> str:
  """The workdir of a 2-step run of the tiny cross-encoder (tests/tasks/tiny_cross_encoder.py)."""
  from orqa_realm.training import loop
  from tests.tasks.tiny_cross_encoder import tiny_cross_encoder_task

  workdir = str(tmp_path_factory.mktemp("runs") / "tiny_cross_encoder")
  loop.train(tiny_cross_encoder_task(squad_block_store.directory, tiny_bert_dir),
             loop.TrainConfig(workdir=workdir, num_train_steps=2, batch_size=8,
                              async_checkpoints=False))
  return workdir


@pytest.fixture(scope="session")
def tiny_colbert_task(squad_block_store, tiny_bert_dir):
  """The tiny ColBERT task (tests/tasks/tiny_late_interaction.py), evaluated on 20 of the
  slice's questions."""
  from tests.tasks.tiny_late_interaction import tiny_colbert_task as build

  return build(squad_block_store.directory, tiny_bert_dir)


@pytest.fixture(scope="session")
def tiny_colbert_run(tiny_colbert_task, tmp_path_factory) -> str:
  """The workdir of a 6-step run of the tiny ColBERT task, logging every 3 steps and evaluated
  at its end."""
  from orqa_realm.training import loop

  workdir = str(tmp_path_factory.mktemp("runs") / "tiny_colbert")
  loop.train(tiny_colbert_task,
             loop.TrainConfig(workdir=workdir, num_train_steps=6, batch_size=8,
                              learning_rate=1e-3, warmup_steps=1, log_every_steps=3,
                              checkpoint_every_steps=6, async_checkpoints=False))
  return workdir


@pytest.fixture(scope="session")
def squad_minilm_embeddings(minilm_dir, squad_block_store, tmp_path_factory):
  """Real embeddings: MiniLM (mean pooling, as trained) over the SQuAD blocks cut to 64
  wordpieces, and over 300 of the slice's questions. ([blocks, 384], [300, 384], questions)

  Computed once for the session's workers, in a subprocess at XLA's full optimisation
  (tests/minilm_embeddings.py): at the tests' level 0 it took 89 s."""
  from tests.minilm_embeddings import embedded_questions

  with built_once(tmp_path_factory, "squad_minilm_embeddings") as directory:
    path = directory / "embeddings.npz"
    if not path.exists():
      run_optimised("tests.minilm_embeddings", str(squad_block_store.directory), minilm_dir,
                    str(DEMO_SQUAD), str(path))
    with np.load(path) as saved:
      blocks, queries = saved["blocks"], saved["queries"]
  return blocks, queries, embedded_questions(str(DEMO_SQUAD))


@pytest.fixture(scope="session")
def tiny_bert_512_dir(minilm_dir, tmp_path_factory) -> str:
  """The tiny random BERT with positions for the demo's 288-wordpiece blocks and reader inputs."""
  import dataclasses

  from tests.tasks.tiny_ict import TINY_BERT, make_tiny_bert_dir

  # Shared by the xdist workers: the tiny pipeline records the path of the BERT it was run with.
  with built_once(tmp_path_factory, "tiny_bert_512") as directory:
    if not (directory / "config.json").exists():
      make_tiny_bert_dir(minilm_dir, str(directory),
                         dataclasses.replace(TINY_BERT, max_position_embeddings=512))
    return str(directory)


def run_tiny_pipeline(workdir, bert_dir, *flags: str) -> subprocess.CompletedProcess:
  """`python -m orqa_realm.pipeline` of configs/squad_pipeline.cfg at --size=tiny with `bert_dir`."""
  return subprocess.run(
      [sys.executable, "-m", "orqa_realm.pipeline", "--flagfile=configs/squad_pipeline.cfg",
       "--size=tiny", f"--bert={bert_dir}", f"--workdir={workdir}", *flags],
      cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_bert_512_dir, tmp_path_factory):
  """(workdir, completed process) of the tiny pipeline with the tiny random BERT (2 minutes),
  run once per session however many xdist workers use it."""
  with built_once(tmp_path_factory, "tiny_pipeline") as directory:
    workdir, outcome = directory / "pipeline", directory / "outcome.json"
    if not outcome.exists():
      result = run_tiny_pipeline(workdir, tiny_bert_512_dir)
      outcome.write_text(json.dumps(dict(args=result.args, returncode=result.returncode,
                                         stdout=result.stdout, stderr=result.stderr)))
    return workdir, subprocess.CompletedProcess(**json.loads(outcome.read_text()))


@pytest.fixture(scope="session")
def pipeline_workdir(tiny_pipeline):
  """The tiny pipeline's workdir, once it completed."""
  workdir, result = tiny_pipeline
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


@pytest.fixture(scope="session")
def tiny_system(pipeline_workdir):
  """The tiny pipeline's trained system (orqa_realm.serving.system.QASystem)."""
  from orqa_realm.serving.system import QASystem, SystemSource

  return QASystem.open(SystemSource(workdir=str(pipeline_workdir)))

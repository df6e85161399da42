"""Shared fixtures: the packaged MiniLM weights, the real data sets, the bundled SQuAD slice."""

from __future__ import annotations

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO_SQUAD = REPO_ROOT / "demo_data" / "squad" / "dev-v1.1.public36.json.gz"
SHARED_DATA = pathlib.Path(os.environ.get("ORQA_REALM_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long tests, run in CI's second step")


@pytest.fixture(scope="session")
def minilm_dir() -> str:
  from orqa_realm.modeling.pretrained import resolve_model_dir

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

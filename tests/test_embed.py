"""Embedding a block store: length batching, equality with plain full-length embedding, the CLI."""

import dataclasses
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orqa_realm.encode import embedding
from orqa_realm.index.storage import IndexRoot, load_embeddings
from orqa_realm.modeling import retriever
from tests.conftest import REPO_ROOT, subprocess_env
from tests.tasks.tiny_ict import TINY_BERT, TINY_RETRIEVER


def test_length_batches_cover_every_block_once_and_pad_little():
  lengths = np.array([5, 300, 40, 33, 64, 1, 288, 70])
  batches = embedding.length_batches(lengths, batch_size=3, max_length=288)
  blocks = np.concatenate([batch.blocks for batch in batches])
  assert sorted(blocks) == list(range(len(lengths)))
  for batch in batches:
    longest = min(lengths[batch.blocks].max(), 288)
    assert longest <= batch.length <= 288
    assert batch.length == 288 or (batch.length % 32 == 0 and batch.length - longest < 32)
  assert [batch.length for batch in batches] == [64, 96, 288]


@pytest.mark.parametrize("block_format", ["pair", "joined"])
def test_bucketed_embeddings_equal_full_length_ones(squad_block_store, block_format):
  config = retriever.RetrieverConfig(TINY_BERT, projection_size=16, block_format=block_format,
                                     block_length=96)
  params = retriever.init_params(config, jax.random.key(0))
  ours = embedding.embed_blocks(squad_block_store, params, config, batch_size=64,
                                dtype=jnp.float32)
  blocks = range(len(squad_block_store))
  reference = retriever.DualEncoder(config).apply(
      {"params": params}, squad_block_store.encode(blocks, 96, block_format),
      method=retriever.DualEncoder.embed_blocks)
  np.testing.assert_allclose(ours, np.asarray(reference), atol=2e-5, rtol=1e-5)


def run_embed(*args):
  return subprocess.run([sys.executable, "-m", "orqa_realm.embed", *args], cwd=REPO_ROOT,
                        env=subprocess_env(), capture_output=True, text=True, timeout=300)


def test_cli_publishes_a_version_of_the_store(squad_block_store, tiny_bert_dir, tmp_path):
  result = run_embed(f"--block_store={squad_block_store.directory}", f"--bert={tiny_bert_dir}",
                     "--projection_size=0", "--block_length=32", "--embed_dtype=float32",
                     f"--index_dir={tmp_path}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "published" in result.stdout
  version = IndexRoot(str(tmp_path)).latest()
  assert version.num_rows == len(squad_block_store)
  assert version.store_fingerprint == squad_block_store.fingerprint
  assert version.checkpoint_step is None
  assert load_embeddings(version).shape == (len(squad_block_store), TINY_BERT.hidden_size)
  # The version records the retriever it was embedded with, and the tokenizer.
  recorded = embedding.indexed_retriever(version)
  assert (recorded.bert, recorded.projection_size, recorded.block_length) == (TINY_BERT, 0, 32)
  assert version.metadata["tokenizer_fingerprint"] == squad_block_store.tokenizer_fingerprint


def test_cli_refuses_a_random_projection(squad_block_store, tiny_bert_dir, tmp_path):
  result = run_embed(f"--block_store={squad_block_store.directory}", f"--bert={tiny_bert_dir}",
                     f"--index_dir={tmp_path}")
  assert result.returncode != 0
  assert "--projection_size=0" in result.stderr


def test_cli_takes_a_runs_settings_and_refuses_a_contradiction(squad_block_store, tiny_ict_run,
                                                               tmp_path):
  """From a run, the retriever's architecture is the run's: repeating it is accepted, a
  contradiction is refused naming both values; an input length may be given."""
  common = [f"--block_store={squad_block_store.directory}", f"--workdir={tiny_ict_run}",
            "--embed_dtype=float32"]
  refused = run_embed(*common, "--pooling=mean", f"--index_dir={tmp_path / 'refused'}")
  assert refused.returncode != 0
  assert f"--pooling='mean' contradicts the run {tiny_ict_run}, whose pooling is 'pooled'" in (
      refused.stderr)
  assert not (tmp_path / "refused").exists()
  # The architecture repeated; blocks embedded longer than the run trained on (48).
  repeated = run_embed(*common, "--projection_size=16", "--block_length=64",
                       f"--index_dir={tmp_path / 'index'}")
  assert repeated.returncode == 0, repeated.stderr[-3000:]
  version = IndexRoot(str(tmp_path / "index")).latest()
  assert version.checkpoint_step == 2
  assert embedding.indexed_retriever(version) == dataclasses.replace(TINY_RETRIEVER,
                                                                     block_length=64)

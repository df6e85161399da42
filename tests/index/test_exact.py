"""Exact search: against a NumPy top-k, sharded over 4 devices against 1, and its refusals."""

import json
import subprocess
import sys

import numpy as np
import pytest

import jax.numpy as jnp
from jax import lax

from orqa_realm.index.exact import ExactSearcher, windowed_top_k
from tests.conftest import REPO_ROOT, subprocess_env


def numpy_top_k(queries, embeddings, k):
  scores = queries @ embeddings.T
  ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return ids, np.take_along_axis(scores, ids, axis=1)


@pytest.mark.parametrize("chunk_size", [7, 64, 4096])
def test_equals_numpy_whatever_the_chunking(chunk_size):
  rng = np.random.default_rng(1)
  embeddings = rng.normal(size=(301, 16)).astype(np.float32)
  queries = rng.normal(size=(13, 16)).astype(np.float32)
  result = ExactSearcher(embeddings, chunk_size=chunk_size).search(queries, 5)
  ids, scores = numpy_top_k(queries, embeddings, 5)
  np.testing.assert_array_equal(result.ids, ids)
  np.testing.assert_allclose(result.scores, scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scores", [
    np.random.default_rng(3).normal(size=(6, 4096)),
    np.random.default_rng(4).integers(0, 3, size=(6, 2048)),  # ties everywhere
    np.where(np.arange(1024) < 700, np.random.default_rng(5).normal(size=(6, 1024)), -np.inf),
], ids=["normal", "ties", "padding"])
@pytest.mark.parametrize("k", [1, 10])
def test_windowed_top_k_is_top_k(scores, k):
  scores = jnp.asarray(scores, jnp.float32)
  ours, reference = windowed_top_k(scores, k), lax.top_k(scores, k)
  np.testing.assert_array_equal(ours[0], reference[0])
  np.testing.assert_array_equal(ours[1], reference[1])


def test_windowed_top_k_breaks_a_tie_across_windows_by_position():
  """The 2nd best (3) ties between window 0 and window 1, whose maximum (7) ranks it first:
  the lower position must win, as in one top-k."""
  scores = np.zeros((1, 128), np.float32)
  scores[0, [0, 32, 33]] = [3, 7, 3]
  np.testing.assert_array_equal(windowed_top_k(jnp.asarray(scores), 2)[1], [[32, 0]])


def test_windowed_chunks_equal_numpy_ties_included():
  """Chunks of 1024 rows (32 windows of 32) searched through window maxima: the same ids as a
  stable NumPy sort, with scores drawn from 4 values so that most of them tie."""
  rng = np.random.default_rng(6)
  embeddings = rng.integers(0, 2, size=(3000, 2)).astype(np.float32)
  queries = rng.integers(1, 3, size=(9, 2)).astype(np.float32)
  result = ExactSearcher(embeddings, chunk_size=1024).search(queries, 5)
  np.testing.assert_array_equal(result.ids, numpy_top_k(queries, embeddings, 5)[0])


def test_ties_go_to_the_lower_id_as_in_one_top_k():
  embeddings = np.ones((50, 4), np.float32)  # every row scores the same
  result = ExactSearcher(embeddings, chunk_size=16).search(np.ones((2, 4), np.float32), 10)
  np.testing.assert_array_equal(result.ids, np.tile(np.arange(10), (2, 1)))


def test_more_query_batches_than_one():
  rng = np.random.default_rng(2)
  embeddings = rng.normal(size=(100, 8)).astype(np.float32)
  queries = rng.normal(size=(70, 8)).astype(np.float32)
  result = ExactSearcher(embeddings, query_batch_size=16).search(queries, 3)
  np.testing.assert_array_equal(result.ids, numpy_top_k(queries, embeddings, 3)[0])


def test_bfloat16_corpus_finds_nearly_the_same_neighbours():
  rng = np.random.default_rng(3)
  embeddings = rng.normal(size=(500, 64)).astype(np.float32)
  queries = rng.normal(size=(20, 64)).astype(np.float32)
  result = ExactSearcher(embeddings, dtype="bfloat16").search(queries, 10)
  exact_ids, _ = numpy_top_k(queries, embeddings, 10)
  overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(result.ids, exact_ids)])
  assert overlap >= 0.9


def test_bad_arguments_are_refused():
  searcher = ExactSearcher(np.zeros((10, 4), np.float32))
  with pytest.raises(ValueError, match="between 1 and the 10 rows"):
    searcher.search(np.zeros((1, 4), np.float32), 11)
  with pytest.raises(ValueError, match=r"shape \[num_queries, 4\]"):
    searcher.search(np.zeros((1, 5), np.float32), 1)


def test_k_beyond_a_chunk_reaches_every_row():
  """ORQA's early loss takes the top c = min(5000, corpus) blocks: k may exceed a chunk."""
  rng = np.random.default_rng(4)
  embeddings = rng.normal(size=(37, 8)).astype(np.float32)
  queries = rng.normal(size=(3, 8)).astype(np.float32)
  result = ExactSearcher(embeddings, chunk_size=4).search(queries, 37)
  ids, scores = numpy_top_k(queries, embeddings, 37)
  np.testing.assert_array_equal(result.ids, ids)
  np.testing.assert_allclose(result.scores, scores, rtol=1e-5, atol=1e-5)


def test_rows_on_device_are_the_embeddings_of_the_ids():
  rng = np.random.default_rng(5)
  embeddings = rng.normal(size=(23, 8)).astype(np.float32)
  ids = rng.integers(0, 23, size=(4, 6))
  rows = ExactSearcher(embeddings, chunk_size=4).rows_on_device(ids)
  np.testing.assert_array_equal(np.asarray(rows), embeddings[ids])


def test_four_devices_equal_one():
  result = subprocess.run(
      [sys.executable, "-m", "tests.index.sharded_search_check"], cwd=REPO_ROOT,
      capture_output=True, text=True, timeout=300,
      env=subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"))
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["shards"] == 4
  assert report["same_ids"]
  assert report["max_score_difference"] <= 1e-5
  assert report["same_ids_beyond_a_shard"]
  assert report["rows_match"]
  assert report["maxsim_shards"] == 4
  assert report["maxsim_same_ids"]
  assert report["maxsim_max_score_difference"] <= 1e-5

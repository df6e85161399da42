"""PLAID search against exact MaxSim over the same decompressed vectors: its inverted lists, its
ranking when nothing is pruned (every centroid probed, no threshold, all blocks kept) equal to
exact search, and the recall of the exact top 10 at its defaults on clustered vectors."""

import functools

import numpy as np
import pytest

from orqa_realm.core.errors import InputError

from orqa_realm.index.multi_vector_search import ExactMultiVectorSearcher, TokenVectors
from orqa_realm.index.plaid import PLAIDSearcher, PLAIDSettings, inverted_lists
from orqa_realm.index.residual_codec import compress, decompress, train_codec
from orqa_realm.modeling import multi_vector
from orqa_realm.modeling.bert import BertConfig
from orqa_realm.modeling.late_interaction import VectorSet
from orqa_realm.modeling.multi_vector import ColBERTConfig
from tests.index.test_residual_codec import clustered_unit_vectors

SCORE = functools.partial(multi_vector.scores, ColBERTConfig(BertConfig()))


@pytest.fixture(scope="module")
def corpus():
  """400 blocks of 4-24 clustered unit vectors, 2-bit compressed, and 30 queries of 8 vectors
  drawn near some blocks' vectors."""
  rng = np.random.default_rng(0)
  lengths = rng.integers(4, 25, size=400)
  vectors = clustered_unit_vectors(int(lengths.sum()), dim=32, clusters=128, seed=1)
  codec = train_codec(vectors, num_centroids=128, nbits=2, normalized=True)
  compressed = compress(codec, vectors)
  picks = rng.integers(len(vectors), size=(30, 8))
  queries = vectors[picks] + 0.2 * rng.normal(size=(30, 8, 32)).astype(np.float32) / np.sqrt(32)
  queries /= np.linalg.norm(queries, axis=-1, keepdims=True)
  exact = ExactMultiVectorSearcher(TokenVectors(decompress(codec, compressed), lengths), SCORE,
                              chunk_size=64)
  return dict(codec=codec, compressed=compressed, lengths=lengths,
              queries=VectorSet(queries.astype(np.float32), np.ones((30, 8), np.int32)),
              exact=exact)


def test_inverted_lists_name_each_centroids_blocks(corpus):
  codes, lengths = corpus["compressed"].codes, corpus["lengths"]
  lists = inverted_lists(codes, lengths, 128)
  owners = np.repeat(np.arange(len(lengths)), lengths)
  for centroid in (0, 5, 77, 127):
    expected = np.unique(owners[codes == centroid])
    np.testing.assert_array_equal(
        lists.blocks[lists.offsets[centroid]:lists.offsets[centroid + 1]], expected)


def test_unpruned_plaid_is_exact_maxsim(corpus):
  settings = PLAIDSettings(ncells=128, centroid_score_threshold=-np.inf, ndocs=4 * 400)
  plaid = PLAIDSearcher(corpus["codec"], corpus["compressed"], corpus["lengths"], settings)
  found, exact = plaid.search_sets(corpus["queries"], 10), corpus["exact"].search_sets(
      corpus["queries"], 10)
  np.testing.assert_array_equal(found.ids, exact.ids)
  np.testing.assert_allclose(found.scores, exact.scores, rtol=1e-5, atol=1e-5)


def test_every_centroid_probed_finds_every_block(corpus):
  plaid = PLAIDSearcher(corpus["codec"], corpus["compressed"], corpus["lengths"],
                        PLAIDSettings(ncells=128))
  scores = corpus["codec"].centroids @ corpus["queries"].vectors[0].T
  np.testing.assert_array_equal(plaid.candidates(scores), np.arange(400))


def test_default_plaid_recalls_the_exact_top_ten(corpus):
  plaid = PLAIDSearcher(corpus["codec"], corpus["compressed"], corpus["lengths"])
  found = plaid.search_sets(corpus["queries"], 10).ids
  exact = corpus["exact"].search_sets(corpus["queries"], 10).ids
  recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)])
  assert recall >= 0.95, recall


def test_pruned_interaction_equals_a_scan_of_each_blocks_vectors(corpus):
  """The pair-wise interaction over the kept centroids' lists equals, block by block, the max
  over its vectors of kept centroids of their scores (ColBERT's -9999 when none is kept),
  summed."""
  plaid = PLAIDSearcher(corpus["codec"], corpus["compressed"], corpus["lengths"])
  scores = corpus["codec"].centroids @ corpus["queries"].vectors[3].T  # [centroids, 8]
  kept = np.flatnonzero(scores.max(axis=1) >= 0.3)
  blocks = np.arange(0, 400, 3)
  found = plaid.pruned_interaction(blocks, scores, kept)
  offsets = np.concatenate([[0], np.cumsum(corpus["lengths"])])
  for block, value in zip(blocks, found):
    codes = corpus["compressed"].codes[offsets[block]:offsets[block + 1]].astype(int)
    codes = codes[np.isin(codes, kept)]
    best = scores[codes].max(axis=0) if len(codes) else np.full(8, -9999.0)
    assert value == pytest.approx(best.sum(), rel=1e-5)


def test_k_beyond_the_candidates_ranks_k_blocks_by_their_scores(corpus):
  """Few candidates (one cell probed), few kept (ndocs 8) and k = 50: every stage keeps at least
  k, and a query with fewer than k candidates takes every block."""
  plaid = PLAIDSearcher(corpus["codec"], corpus["compressed"], corpus["lengths"],
                        PLAIDSettings(ncells=1, ndocs=8))
  result = plaid.search_sets(corpus["queries"], 50)
  assert result.ids.shape == (30, 50) and np.isfinite(result.scores).all()
  assert all(len(set(row)) == 50 for row in result.ids)
  assert (np.diff(result.scores, axis=1) <= 1e-6).all()


def test_bad_settings_are_refused():
  with pytest.raises(InputError, match="--plaid_ncells=0"):
    PLAIDSettings(ncells=0)

"""The sparse inverted index: its search against a dense NumPy ranking, its round trip to disk,
and refusal of another store, vocabulary or encoder."""

import itertools

import numpy as np
import pytest
import scipy.sparse

from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import build_block_store
from orqa_realm.data.documents import load_documents
from orqa_realm.encode.sparse import sparse_rows
from orqa_realm.index import sparse
from tests.conftest import DEMO_SQUAD

VOCABULARY = dict(size=40, tokenizer_fingerprint="abc")
ENCODER = dict(bert="tiny", weights="123")


def random_vectors(rows, seed, density=0.2):
  rng = np.random.default_rng(seed)
  weights = rng.uniform(0, 2, size=(rows, 40)) * (rng.uniform(size=(rows, 40)) < density)
  return weights.astype(np.float32)


def test_search_against_dense_numpy(squad_block_store):
  blocks = random_vectors(len(squad_block_store), 0)
  queries = random_vectors(5, 1, density=0.3)
  index = sparse.SparseIndex(scipy.sparse.csr_matrix(blocks), VOCABULARY, ENCODER)
  result = index.search(scipy.sparse.csr_matrix(queries), 7)
  scores = queries @ blocks.T
  for row in range(5):
    expected = np.lexsort((np.arange(len(blocks)), -scores[row]))[:7]
    np.testing.assert_array_equal(result.ids[row], expected)
    np.testing.assert_allclose(result.scores[row], scores[row, expected], rtol=1e-5)
  assert index.num_postings == np.count_nonzero(blocks)


def test_saved_index_loads_and_is_refused_for_another(squad_block_store, tokenizer, tmp_path):
  blocks = scipy.sparse.csr_matrix(random_vectors(len(squad_block_store), 0))
  directory = str(tmp_path / "index")
  sparse.SparseIndex(blocks, VOCABULARY, ENCODER).save(directory, squad_block_store)
  loaded = sparse.SparseIndex.load(directory, squad_block_store, VOCABULARY, ENCODER)
  assert (loaded.blocks != blocks).nnz == 0
  with pytest.raises(InputError, match="vocabulary"):
    sparse.SparseIndex.load(directory, squad_block_store, dict(VOCABULARY, size=41), ENCODER)
  with pytest.raises(InputError, match="encoder"):
    sparse.SparseIndex.load(directory, squad_block_store, VOCABULARY, dict(ENCODER, weights="9"))
  spec = f"squad:{DEMO_SQUAD}"
  other = build_block_store(itertools.islice(load_documents(spec), 5), tokenizer,
                            tmp_path / "other", source=spec)
  with pytest.raises(InputError, match="sparse index"):
    sparse.SparseIndex.load(directory, other, VOCABULARY, ENCODER)


def test_rows_keep_their_heaviest_terms():
  weights = np.array([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 0.0, 0.0]], np.float32)
  cut = sparse_rows(weights, max_terms=2).toarray()
  np.testing.assert_array_equal(cut, [[0, 3, 0, 2], [5, 0, 0, 0]])
  np.testing.assert_array_equal(sparse_rows(weights).toarray(), weights)

"""Exact multi-vector search against a NumPy scan of every block: MaxSim and the
poly-encoder's score, blocks of different lengths (empty ones too), chunks and padding that do
not divide the corpus, k beyond a chunk; the flat corpus layout."""

import functools

import numpy as np
import pytest

from orqa_realm.index.multi_vector_search import ExactMultiVectorSearcher, TokenVectors
from orqa_realm.modeling import multi_vector
from orqa_realm.modeling.bert import BertConfig
from orqa_realm.modeling.late_interaction import VectorSet
from orqa_realm.modeling.multi_vector import ColBERTConfig, PolyEncoderConfig
from tests.modeling.test_multi_vector import numpy_scores

BERT = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=64)


def random_corpus(rng, num_blocks: int, dim: int, longest: int) -> TokenVectors:
  lengths = rng.integers(0, longest + 1, size=num_blocks)
  lengths[:3] = (0, longest, 1)
  return TokenVectors(rng.normal(size=(int(lengths.sum()), dim)).astype(np.float32), lengths)


def random_queries(rng, num_queries: int, vectors: int, dim: int) -> VectorSet:
  mask = (rng.random((num_queries, vectors)) > 0.3).astype(np.int32)
  mask[:, 0] = 1
  return VectorSet(rng.normal(size=(num_queries, vectors, dim)).astype(np.float32), mask)


def test_padded_layout_holds_each_block_in_its_row():
  corpus = TokenVectors(np.arange(12, dtype=np.float32).reshape(6, 2), np.array([2, 0, 3, 1]))
  np.testing.assert_array_equal(corpus.offsets, [0, 2, 2, 5, 6])
  padded = corpus.padded(num_rows=5)
  assert padded.vectors.shape == (5, 3, 2)
  np.testing.assert_array_equal(padded.mask, [[1, 1, 0], [0, 0, 0], [1, 1, 1], [1, 0, 0],
                                              [0, 0, 0]])
  np.testing.assert_array_equal(padded.vectors[2], corpus.vectors[2:5])
  np.testing.assert_array_equal(padded.vectors[1], 0)
  with pytest.raises(ValueError, match="sum to 5"):
    TokenVectors(corpus.vectors, np.array([2, 3])).check()


@pytest.mark.parametrize("config, query_vectors", [
    (ColBERTConfig(BERT), 6), (PolyEncoderConfig(BERT), 1)])
def test_search_equals_numpy_scan(config, query_vectors):
  rng = np.random.default_rng(0)
  corpus = random_corpus(rng, 203, 8, 12)
  queries = random_queries(rng, 11, query_vectors, 8)
  searcher = ExactMultiVectorSearcher(corpus, functools.partial(multi_vector.scores, config),
                                 chunk_size=16, query_batch_size=8)
  padded = corpus.padded()
  expected = numpy_scores(config.kind, *queries, *padded)  # [queries, blocks]
  for k in (1, 10, 40):  # 40 > a chunk
    result = searcher.search_sets(queries, k)
    # The order of the k best (ties break towards the lower id, as a stable sort does).
    order = np.argsort(-expected, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(result.ids, order)
    np.testing.assert_allclose(result.scores, np.take_along_axis(expected, order, 1),
                               rtol=1e-5, atol=1e-5)


def test_bad_queries_are_refused():
  rng = np.random.default_rng(0)
  config = ColBERTConfig(BERT)
  searcher = ExactMultiVectorSearcher(random_corpus(rng, 20, 8, 5),
                                 functools.partial(multi_vector.scores, config))
  with pytest.raises(ValueError, match=r"\[num_queries, n, 8\]"):
    searcher.search_sets(VectorSet(np.zeros((2, 3, 4)), np.ones((2, 3))), 5)
  with pytest.raises(ValueError, match="k=21"):
    searcher.search_sets(random_queries(rng, 2, 3, 8), 21)

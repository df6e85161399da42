"""BM25 over DeepCT-rewritten blocks: scores against Lucene's formula in NumPy with the
rewritten frequencies, the saved index and its refusals."""

import itertools

import numpy as np
import pytest

from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import build_block_store
from orqa_realm.data.deepct import rewritten_terms
from orqa_realm.data.documents import load_documents
from orqa_realm.index.deepct import RewrittenBM25
from tests.conftest import DEMO_SQUAD
from tests.index.test_bm25 import lucene_bm25

TERMS = ("norman", "franc", "river", "king", "duke", "castl")
DESCRIPTION = dict(workdir="runs/deepct", run_id="abc", step=2, scale=100.0, k1=8.0, b=0.75)


def random_rewrites(num_blocks: int, seed: int = 0) -> list[list[str]]:
  """Blocks of random term frequencies (0-40 each: a rewrite's scale, far above raw counts)."""
  rng = np.random.default_rng(seed)
  frequencies = rng.integers(0, 40, size=(num_blocks, len(TERMS))) * (
      rng.uniform(size=(num_blocks, len(TERMS))) < 0.4)
  return [rewritten_terms({term: int(f) for term, f in zip(TERMS, row) if f})
          for row in frequencies]


def test_scores_equal_lucene_bm25_over_the_rewritten_frequencies():
  blocks = random_rewrites(300)
  index = RewrittenBM25.build(blocks, k1=8.0, b=0.75, description=DESCRIPTION)
  queries = [["norman", "king"], ["castl", "castl", "duke"], ["river", "unknown"]]
  result = index.search(queries, 10)
  for query, ids, scores in zip(queries, result.ids, result.scores):
    expected = lucene_bm25(query, blocks, k1=8.0, b=0.75)
    np.testing.assert_allclose(scores, expected[ids], rtol=1e-5)
    np.testing.assert_allclose(scores, np.sort(expected)[::-1][:10], rtol=1e-5)
  assert index.num_terms == sum(len(terms) for terms in blocks)


def test_saved_index_loads_and_is_refused_for_another(squad_block_store, tokenizer, tmp_path):
  blocks = random_rewrites(len(squad_block_store))
  directory = str(tmp_path / "index")
  built = RewrittenBM25.build(blocks, k1=8.0, b=0.75, description=DESCRIPTION)
  built.save(directory, squad_block_store)
  loaded = RewrittenBM25.load(directory, squad_block_store, DESCRIPTION)
  queries = [["norman", "duke"], ["river"]]
  np.testing.assert_array_equal(loaded.search(queries, 5).scores, built.search(queries, 5).scores)
  # A run is its id: moved elsewhere it is the same run, another run of that directory is not.
  RewrittenBM25.load(directory, squad_block_store, dict(DESCRIPTION, workdir="/moved/deepct"))
  for other in (dict(DESCRIPTION, scale=10.0), dict(DESCRIPTION, run_id="def"),
                dict(DESCRIPTION, step=3)):
    with pytest.raises(InputError, match="deepct_index_dir"):
      RewrittenBM25.load(directory, squad_block_store, other)
  spec = f"squad:{DEMO_SQUAD}"
  other = build_block_store(itertools.islice(load_documents(spec), 5), tokenizer,
                            tmp_path / "other", source=spec)
  with pytest.raises(InputError, match="DeepCT index"):
    RewrittenBM25.load(directory, other, DESCRIPTION)

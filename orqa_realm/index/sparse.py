"""An inverted index of learned sparse vectors (SPLADE's term weights over the vocabulary),
behind the searcher protocol.

The blocks' vectors are one `scipy.sparse` CSR matrix [blocks, vocab]; a batch of queries, a CSR
matrix [queries, vocab], scores every block at once by a sparse product (which reads only the
postings of the queries' terms), and the k best of each query are kept. Saved beside the runs
that use it, an index records the block store's fingerprint, the vocabulary (size and
tokenizer fingerprint) and what encoded it (`encoder`: a run and checkpoint, or a model
directory), and is refused for another store, vocabulary or encoder rather than silently
searched.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import scipy.sparse
from etils import epath

from orqa_realm.core import paths, run_directory
from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.files import Owner, atomic_directory, read_manifest
from orqa_realm.index.searcher import SearchResult, check_k

FORMAT_VERSION = 1
META_FILE = "sparse_index.json"
MATRIX_FILE = "blocks.npz"
OWNER = Owner(META_FILE, "orqa_realm.sparse_index")
# Queries scored per sparse product: bounds the dense [queries, blocks] score matrix.
QUERY_CHUNK = 256


def top_k(scores: np.ndarray, k: int) -> SearchResult:
  """The k best columns of each row of `scores` [queries, blocks], best first; among columns
  tied with the k-th score, which are kept is arbitrary (those kept are ordered by column)."""
  candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # [queries, k] unordered
  picked = np.take_along_axis(scores, candidates, axis=1)
  order = np.lexsort((candidates, -picked), axis=1)
  ids = np.take_along_axis(candidates, order, axis=1)
  return SearchResult(ids.astype(np.int64),
                      np.take_along_axis(scores, ids, axis=1).astype(np.float32))


class SparseIndex:
  """Blocks as sparse term-weight vectors; queries score them by dot product."""

  def __init__(self, blocks: scipy.sparse.csr_matrix, vocabulary: dict[str, Any],
               encoder: dict[str, Any]):
    """`blocks`: [num_blocks, vocab] float32; `vocabulary`: {size, tokenizer_fingerprint};
    `encoder`: what encoded them (JSON data)."""
    if blocks.shape[1] != vocabulary["size"]:
      raise ValueError(f"vectors of {blocks.shape[1]} terms for a vocabulary of "
                       f"{vocabulary['size']}")
    self.blocks = blocks.tocsr().astype(np.float32)
    self.postings = self.blocks.T.tocsr()  # [vocab, blocks]: each term's blocks and weights
    self.vocabulary, self.encoder = vocabulary, encoder

  @property
  def num_rows(self) -> int:
    return self.blocks.shape[0]

  @property
  def num_postings(self) -> int:
    """Nonzero (block, term) weights: the index's size."""
    return int(self.blocks.nnz)

  def search(self, queries: scipy.sparse.csr_matrix, k: int) -> SearchResult:
    """[num_queries, vocab] sparse queries -> the k best blocks of each, best first."""
    check_k(k, self.num_rows)
    if queries.shape[1] != self.blocks.shape[1]:
      raise ValueError(f"queries of {queries.shape[1]} terms for a vocabulary of "
                       f"{self.blocks.shape[1]}")
    results = [top_k((queries[start:start + QUERY_CHUNK] @ self.postings).toarray(), k)
               for start in range(0, queries.shape[0], QUERY_CHUNK)]
    return SearchResult(np.concatenate([r.ids for r in results]),
                        np.concatenate([r.scores for r in results]))

  def save(self, directory: str, store: BlockStore) -> None:
    """Writes the index and what it was built from to `directory`, atomically."""
    with atomic_directory(directory, OWNER) as partial:
      scipy.sparse.save_npz(os.path.join(partial, MATRIX_FILE), self.blocks)
      meta = dict(format=OWNER.format, format_version=FORMAT_VERSION, num_rows=self.num_rows,
                  num_postings=self.num_postings, store_fingerprint=store.fingerprint,
                  vocabulary=self.vocabulary, encoder=self.encoder)
      with open(os.path.join(partial, META_FILE), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)

  @classmethod
  def load(cls, directory: str, store: BlockStore, vocabulary: dict[str, Any],
           encoder: dict[str, Any]) -> SparseIndex:
    """The index saved in `directory`, refused unless it holds `store` encoded by `encoder`
    over `vocabulary`."""
    path, meta = read_manifest(directory, OWNER, "sparse index", FORMAT_VERSION)
    store.check_matches(num_rows=meta["num_rows"], fingerprint=meta["store_fingerprint"],
                        source=f"the sparse index {directory}")
    for name, expected in (("vocabulary", vocabulary), ("encoder", encoder)):
      if not run_directory.same_model_source(meta[name], expected):
        raise InputError(f"the sparse index's {name} is {meta[name]}, not this run's "
                         f"{expected}: pass another --sparse_index_dir, or delete it to rebuild",
                         path=path, field="sparse_index_dir")
    with paths.local_directory(directory) as local:
      blocks = scipy.sparse.load_npz(os.path.join(local, MATRIX_FILE))
    return cls(blocks, vocabulary, encoder)


def exists(directory: str) -> bool:
  return bool(directory) and (epath.Path(directory) / META_FILE).exists()

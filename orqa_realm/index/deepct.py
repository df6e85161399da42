"""BM25 over passages rewritten by DeepCT: each block is the bag of its terms, each repeated as
often as its predicted weight says (`data/deepct.py`), indexed by bm25s; queries are the terms
of their words, analysed as the blocks' were.

Saved beside the runs that use it, an index records the block store's fingerprint and what
rewrote the blocks (`description`: the DeepCT run and checkpoint, the analyzer, the scale and
BM25's k1 and b), and is refused for any other rather than silently searched (a run is known by
its id, so a run moved to another directory still finds its index).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

import bm25s
import numpy as np
from absl import logging
from etils import epath

from orqa_realm.core import paths, run_directory
from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.files import Owner, atomic_directory, read_manifest
from orqa_realm.index.searcher import SearchResult, check_k

FORMAT_VERSION = 1
META_FILE = "deepct_index.json"
OWNER = Owner(META_FILE, "orqa_realm.deepct_index")


class RewrittenBM25:
  """BM25 (Lucene's variant, as `index/bm25.py`) over pre-analysed, rewritten blocks."""

  def __init__(self, retriever: bm25s.BM25, num_rows: int, num_terms: int,
               description: dict[str, Any]):
    self.retriever, self._num_rows = retriever, num_rows
    self.num_terms = num_terms  # term occurrences over all rewritten blocks: the index's size
    self.description = description

  @property
  def num_rows(self) -> int:
    return self._num_rows

  @classmethod
  def build(cls, blocks_terms: Sequence[list[str]], *, k1: float, b: float,
            description: dict[str, Any]) -> RewrittenBM25:
    """Indexes each block's rewritten terms (`blocks_terms[i]`: block i's, repeats included)."""
    started = time.perf_counter()
    retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
    retriever.index([list(terms) for terms in blocks_terms], show_progress=False)
    num_terms = sum(len(terms) for terms in blocks_terms)
    logging.info("DeepCT BM25 indexed %d rewritten blocks (%d term occurrences) in %.1f s",
                 len(blocks_terms), num_terms, time.perf_counter() - started)
    return cls(retriever, len(blocks_terms), num_terms, description)

  def search(self, queries_terms: Sequence[list[str]], k: int) -> SearchResult:
    """The k best blocks of each query (its terms), best first; blocks sharing no term with it
    score 0."""
    check_k(k, self.num_rows)
    ids, scores = self.retriever.retrieve([list(terms) for terms in queries_terms], k=k,
                                          show_progress=False)
    return SearchResult(ids.astype(np.int64), scores.astype(np.float32))

  def save(self, directory: str, store: BlockStore) -> None:
    """Writes the index and what it was built from to `directory`, atomically."""
    with atomic_directory(directory, OWNER) as partial:
      self.retriever.save(partial, show_progress=False)
      meta = dict(format=OWNER.format, format_version=FORMAT_VERSION, num_rows=self.num_rows,
                  num_terms=self.num_terms, store_fingerprint=store.fingerprint,
                  description=self.description)
      with open(os.path.join(partial, META_FILE), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)

  @classmethod
  def load(cls, directory: str, store: BlockStore, description: dict[str, Any]) -> RewrittenBM25:
    """The index saved in `directory`, refused unless it holds `store` rewritten as
    `description` says."""
    path, meta = read_manifest(directory, OWNER, "DeepCT index", FORMAT_VERSION)
    store.check_matches(num_rows=meta["num_rows"], fingerprint=meta["store_fingerprint"],
                        source=f"the DeepCT index {directory}")
    if not run_directory.same_model_source(meta["description"], description):
      raise InputError(f"the DeepCT index was built as {meta['description']}, not as this run "
                       f"asks ({description}): pass another --deepct_index_dir, or delete it to "
                       "rebuild", path=path, field="deepct_index_dir")
    with paths.local_directory(directory) as local:
      retriever = bm25s.BM25.load(local, show_progress=False)
    return cls(retriever, meta["num_rows"], meta["num_terms"], description)


def exists(directory: str) -> bool:
  return bool(directory) and (epath.Path(directory) / META_FILE).exists()

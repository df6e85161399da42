"""PLAID search (Santhanam et al. 2022) over a compressed multi-vector index: MaxSim without
touching most of the corpus.

For each query (its vectors Q, [n, dim]):
  1. centroid scores S = centroids . Q^T ([centroids, n]);
  2. candidate generation: the blocks holding a vector of one of each query vector's `ncells`
     best centroids (an inverted list from centroid to blocks, built when the index is loaded);
  3. centroid interaction with pruning: a block's approximate score is MaxSim with each of its
     vectors replaced by its centroid, over the vectors whose centroid scores at least
     `centroid_score_threshold` for some query vector (each query vector's max starting at
     -9999, as ColBERT's does: a block without such a vector ranks last); the best `ndocs`
     stay;
  4. centroid interaction without pruning over those; the best ndocs / 4 stay;
  5. exact MaxSim over their decompressed vectors ranks the final k.
The defaults are ColBERT's for k <= 100 (ncells 2, threshold 0.45, ndocs 1024). Unlike ColBERT,
no stage keeps fewer than k blocks, and a query with fewer than k candidates takes every block
as one, so that k blocks are always ranked by their scores. With every centroid probed, no
threshold and ndocs at least the corpus, the ranking is exact MaxSim over the decompressed
vectors, which the tests check.

Queries are searched one at a time on the host with NumPy, as ColBERT's CPU search does.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from orqa_realm.core.config import check_minimum, setting
from orqa_realm.index import residual_codec
from orqa_realm.index.residual_codec import CompressedVectors, ResidualCodec
from orqa_realm.index.searcher import SearchResult, check_k
from orqa_realm.modeling.late_interaction import VectorSet


@dataclasses.dataclass(frozen=True)
class PLAIDSettings:
  """How far PLAID's candidate generation and pruning reach."""
  ncells: int = setting(2, "Centroids probed per query vector for candidates.",
                        flag="plaid_ncells")
  centroid_score_threshold: float = setting(
      0.45, "Vectors whose centroid scores below this for every query vector are left out of "
      "the first centroid interaction.", flag="plaid_centroid_score_threshold")
  ndocs: int = setting(
      1024, "Candidates kept by the first centroid interaction; a quarter of them are scored "
      "exactly.", flag="plaid_ndocs")

  def __post_init__(self):
    check_minimum("plaid_ncells", self.ncells, 1)
    check_minimum("plaid_ndocs", self.ndocs, 1)


# What each query vector's best centroid score starts from in centroid interaction (ColBERT's):
# below any inner product of unit vectors, finite so that sums stay comparable.
_NO_MATCH = -9999.0


class InvertedLists(NamedTuple):
  """For each centroid, the blocks holding a vector assigned to it."""
  offsets: np.ndarray  # [centroids + 1] int64
  blocks: np.ndarray  # [entries] int64: centroid c's blocks are blocks[offsets[c]:offsets[c+1]]


def inverted_lists(codes: np.ndarray, lengths: np.ndarray, num_centroids: int) -> InvertedLists:
  """The inverted lists of vectors with centroid ids `codes` ([total]), block after block
  (`lengths` vectors each)."""
  num_blocks = len(lengths)
  owners = np.repeat(np.arange(num_blocks, dtype=np.int64), lengths)  # [total]
  pairs = np.unique(codes.astype(np.int64) * num_blocks + owners)  # sorted by centroid, block
  centroids, blocks = pairs // num_blocks, pairs % num_blocks
  offsets = np.searchsorted(centroids, np.arange(num_centroids + 1))
  return InvertedLists(offsets.astype(np.int64), blocks)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """The concatenation of arange(s, s + l) for each (s, l)."""
  total = int(lengths.sum())
  segment_starts = np.cumsum(lengths) - lengths
  return np.repeat(starts - segment_starts, lengths) + np.arange(total)


def _segment_max_sum(scores: np.ndarray, lengths: np.ndarray, initial: float) -> np.ndarray:
  """[total, n] scores of consecutive segments of `lengths` rows -> [segments]: per segment,
  each column's max (`initial` for an empty segment), summed over columns."""
  best = np.full((len(lengths), scores.shape[1]), initial, np.float32)
  nonempty = lengths > 0
  if nonempty.any():
    starts = (np.cumsum(lengths) - lengths)[nonempty]
    best[nonempty] = np.maximum.reduceat(scores, starts, axis=0)
  return best.sum(axis=1)


class PLAIDSearcher:
  """PLAID over a compressed corpus (its codec, compressed vectors and per-block lengths)."""

  def __init__(self, codec: ResidualCodec, compressed: CompressedVectors, lengths: np.ndarray,
               settings: PLAIDSettings = PLAIDSettings()):
    self.codec, self.compressed, self.settings = codec, compressed, settings
    self.lengths = np.asarray(lengths, np.int64)
    self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
    self.codes = np.asarray(compressed.codes, np.int64)
    self.lists = inverted_lists(self.codes, self.lengths, len(codec.centroids))

  @property
  def num_rows(self) -> int:
    return len(self.lengths)

  def candidates(self, centroid_scores: np.ndarray) -> np.ndarray:
    """[blocks] sorted ids holding a vector of some query vector's `ncells` best centroids."""
    ncells = min(self.settings.ncells, len(centroid_scores))
    best = np.argpartition(-centroid_scores, ncells - 1, axis=0)[:ncells]  # [ncells, n]
    cells = np.unique(best)
    starts, stops = self.lists.offsets[cells], self.lists.offsets[cells + 1]
    return np.unique(self.lists.blocks[_ranges(starts, stops - starts)])

  def pruned_interaction(self, blocks: np.ndarray, centroid_scores: np.ndarray,
                         kept_cells: np.ndarray) -> np.ndarray:
    """[blocks] approximate MaxSim of the (sorted) candidate `blocks` over their vectors of the
    `kept_cells` centroids only, each replaced by its centroid's scores (each query vector's max
    starting at -9999).

    Read from the inverted lists of the kept centroids alone, (centroid, block) pair by pair: a
    block's max over its vectors of one centroid is that centroid's score, however many of its
    vectors the centroid holds, so the corpus's vectors are never touched."""
    starts = self.lists.offsets[kept_cells]
    sizes = self.lists.offsets[kept_cells + 1] - starts
    pair_blocks = self.lists.blocks[_ranges(starts, sizes)]  # [pairs]
    pair_cells = np.repeat(kept_cells, sizes)
    position = np.searchsorted(blocks, pair_blocks)  # the pair's block among the candidates
    inside = blocks[np.minimum(position, len(blocks) - 1)] == pair_blocks
    position, pair_cells = position[inside], pair_cells[inside]
    order = np.argsort(position, kind="stable")
    position, pair_cells = position[order], pair_cells[order]
    lengths = np.bincount(position, minlength=len(blocks))  # kept pairs of each candidate
    return _segment_max_sum(centroid_scores[pair_cells], lengths, initial=_NO_MATCH)

  def centroid_interaction(self, blocks: np.ndarray, centroid_scores: np.ndarray) -> np.ndarray:
    """[blocks] approximate MaxSim with every vector of the blocks replaced by its centroid's
    scores."""
    lengths = self.lengths[blocks]
    codes = self.codes[_ranges(self.offsets[blocks], lengths)]
    return _segment_max_sum(centroid_scores[codes], lengths, initial=_NO_MATCH)

  def exact_scores(self, blocks: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """[blocks] MaxSim of `queries` [n, dim] over the blocks' decompressed vectors."""
    lengths = self.lengths[blocks]
    rows = _ranges(self.offsets[blocks], lengths)
    vectors = residual_codec.decompress(
        self.codec, CompressedVectors(self.compressed.codes[rows], self.compressed.residuals[rows]))
    return _segment_max_sum(vectors @ queries.T, lengths, initial=-np.inf)

  def search_one(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best blocks (ids, scores) of one query's [n, dim] vectors."""
    if not len(queries):
      raise ValueError("a query without vectors cannot be searched")
    settings = self.settings
    centroid_scores = self.codec.centroids @ queries.T  # [centroids, n]
    blocks = self.candidates(centroid_scores)
    if len(blocks) < k:
      blocks = np.arange(self.num_rows)
    kept_cells = np.flatnonzero(centroid_scores.max(axis=1)
                                >= settings.centroid_score_threshold)
    blocks = np.sort(_best(blocks, self.pruned_interaction(blocks, centroid_scores, kept_cells),
                           max(settings.ndocs, k))[0])
    blocks = np.sort(_best(blocks, self.centroid_interaction(blocks, centroid_scores),
                           max(settings.ndocs // 4, k))[0])
    return _best(blocks, self.exact_scores(blocks, queries), k)

  def search_sets(self, queries: VectorSet, k: int) -> SearchResult:
    """[num_queries, n, dim] query vectors ([num_queries, n] mask) -> the k best blocks of
    each, best first."""
    check_k(k, self.num_rows)
    vectors, mask = np.asarray(queries.vectors, np.float32), np.asarray(queries.mask)
    found = [self.search_one(query[query_mask != 0], k)
             for query, query_mask in zip(vectors, mask)]
    return SearchResult(np.array([ids for ids, _ in found], np.int64).reshape(-1, k),
                        np.array([scores for _, scores in found], np.float32).reshape(-1, k))


def _best(blocks: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """The k best-scored of `blocks` (sorted ids), best first; ties towards the lower id."""
  order = np.argsort(-scores, kind="stable")[:k]
  return blocks[order], scores[order]

"""Two-stage retrieval: a first stage's top `depth` blocks of each query reordered by a second
stage's scores (a cross-encoder's); `RerankingSearcher` is the two stages as one text searcher
(what `ask` and `serve` search with).

The second stage's scores may be interpolated with the first stage's (each z-normalised over a
query's `depth` candidates, the first stage's weighted), as is common when the reranker is
trained on less data than the first stage saw: the reranker's mistakes are then outvoted where
the first stage is confident.

Blocks the first stage returned beyond `depth` keep their first-stage order after the reranked
ones, scored below all of them, so that metrics over deep rankings (recall@1000, BEIR's document
runs) still see them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from orqa_realm.index.fusion import normalize_scores
from orqa_realm.index.searcher import SearchResult, TextSearcher, check_k

# (query texts, [queries, depth] block ids) -> [queries, depth] scores, higher is better.
PairScorer = Callable[[Sequence[str], np.ndarray], np.ndarray]


def interpolated_scores(first_stage_scores: np.ndarray, scores: np.ndarray,
                        first_stage_weight: float) -> np.ndarray:
  """[queries, depth] z(scores) + first_stage_weight x z(first_stage_scores), each z-normalised
  per query; `scores` unchanged when the weight is 0."""
  if first_stage_weight < 0:
    raise ValueError(f"a first-stage weight of {first_stage_weight} would reverse its ranking")
  if first_stage_weight == 0:
    return scores
  return np.stack([normalize_scores(second, "zscore")
                   + first_stage_weight * normalize_scores(first, "zscore")
                   for first, second in zip(first_stage_scores, scores)])


def rerank(first_stage: SearchResult, scores: np.ndarray,
           first_stage_weight: float = 0.0) -> SearchResult:
  """`first_stage` with its first `scores.shape[1]` blocks of each query reordered by `scores`
  (interpolated with the first stage's scores when `first_stage_weight` is not 0; best first, ties
  kept in first-stage order) and the rest after them in their order.

  Args:
    first_stage: [queries, k'] ranking.
    scores: [queries, depth] second-stage scores of the first depth <= k' blocks.
    first_stage_weight: weight of the first stage's z-normalised scores.
  """
  depth = scores.shape[1]
  scores = interpolated_scores(first_stage.scores[:, :depth], scores, first_stage_weight)
  order = np.argsort(-scores, axis=1, kind="stable")  # [queries, depth]
  ids = np.take_along_axis(first_stage.ids[:, :depth], order, axis=1)
  reranked = np.take_along_axis(scores, order, axis=1).astype(np.float32)
  rest = first_stage.ids.shape[1] - depth
  # Below every reranked score, decreasing in first-stage order.
  tail = reranked[:, -1:] - 1.0 - np.arange(rest, dtype=np.float32)[None, :]
  return SearchResult(np.concatenate([ids, first_stage.ids[:, depth:]], axis=1),
                      np.concatenate([reranked, tail], axis=1))


@dataclasses.dataclass(frozen=True)
class RerankingSearcher:
  """`first_stage`'s top `depth` blocks of each text reordered by `score` (interpolated with
  the first stage's scores by `first_stage_weight`, as `rerank`)."""
  first_stage: TextSearcher
  score: PairScorer
  depth: int = 100
  first_stage_weight: float = 0.0

  @property
  def num_rows(self) -> int:
    return self.first_stage.num_rows

  def search_texts(self, texts: Sequence[str], k: int) -> SearchResult:
    check_k(k, self.num_rows)
    candidates = self.first_stage.search_texts(texts, max(k, min(self.depth, self.num_rows)))
    depth = min(self.depth, candidates.ids.shape[1])
    reranked = rerank(candidates, self.score(texts, candidates.ids[:, :depth]),
                      self.first_stage_weight)
    return SearchResult(reranked.ids[:, :k], reranked.scores[:, :k])

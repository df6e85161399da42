"""Two-stage retrieval: a first stage's top `depth` blocks of each query reordered by a second
stage's scores (a cross-encoder's).

Blocks the first stage returned beyond `depth` keep their first-stage order after the reranked
ones, scored below all of them, so that metrics over deep rankings (recall@1000, BEIR's document
runs) still see them.
"""

from __future__ import annotations

import numpy as np

from orqa_realm.index.searcher import SearchResult


def rerank(first_stage: SearchResult, scores: np.ndarray) -> SearchResult:
  """`first_stage` with its first `scores.shape[1]` blocks of each query reordered by `scores`
  (best first, ties kept in first-stage order) and the rest after them in their order.

  Args:
    first_stage: [queries, k'] ranking.
    scores: [queries, depth] second-stage scores of the first depth <= k' blocks.
  """
  depth = scores.shape[1]
  order = np.argsort(-scores, axis=1, kind="stable")  # [queries, depth]
  ids = np.take_along_axis(first_stage.ids[:, :depth], order, axis=1)
  reranked = np.take_along_axis(scores, order, axis=1).astype(np.float32)
  rest = first_stage.ids.shape[1] - depth
  # Below every reranked score, decreasing in first-stage order.
  tail = reranked[:, -1:] - 1.0 - np.arange(rest, dtype=np.float32)[None, :]
  return SearchResult(np.concatenate([ids, first_stage.ids[:, depth:]], axis=1),
                      np.concatenate([reranked, tail], axis=1))

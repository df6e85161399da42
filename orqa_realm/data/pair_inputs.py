"""Cross-encoder inputs: each query packed with each of its candidate blocks as
`[CLS] query [SEP] title text [SEP]` (query segment 0, passage segment 1).

The query is cut to `query_length` wordpieces and the passage gets the rest. A batch is padded
to its own longest input rounded up to a multiple of `length_multiple`, as the reader's are:
few compiled shapes, little padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from orqa_realm.data.reader_inputs import LENGTH_MULTIPLE, padded_length
from orqa_realm.data.tokenization import TokenBatch


def passage_ids(store, block: int) -> np.ndarray:
  """The passage of a block as the cross-encoder reads it: its title's wordpieces, then its
  text's."""
  return np.concatenate([store.title_token_ids(block), store.token_ids(block)]).astype(np.int32)


def pair_lengths(store, queries: Sequence[Sequence[int]], blocks: Sequence[int], *,
                 max_length: int, query_length: int) -> np.ndarray:
  """[pairs] int64 input length of each (query, block) pair, at most `max_length`."""
  passage_lengths = np.array([len(store.title_token_ids(int(block))) + len(store.token_ids(
      int(block))) for block in blocks], np.int64)
  query_lengths = np.array([min(len(query), query_length) for query in queries], np.int64)
  return np.minimum(query_lengths + passage_lengths + 3, max_length)


def pack_pairs(store, queries: Sequence[Sequence[int]], blocks: Sequence[int], *, length: int,
               query_length: int) -> TokenBatch:
  """[pairs, length] inputs of (query wordpieces, block) pairs, one pair per row."""
  return store.pack([list(query[:query_length]) for query in queries],
                    [passage_ids(store, int(block)) for block in blocks], max_length=length)


def pair_inputs(store, query_ids: Sequence[Sequence[int]], block_ids: np.ndarray, *,
                max_length: int, query_length: int,
                length_multiple: int = LENGTH_MULTIPLE) -> TokenBatch:
  """[queries, candidates, length] inputs of each query with each of its blocks.

  Args:
    store: the `BlockStore` the block ids index.
    query_ids: [queries] wordpieces of each query (no special tokens).
    block_ids: [queries, candidates] the blocks paired with each query.
    length_multiple: the padded length is the batch's longest input rounded up to this
      (`max_length`: every batch at full length, as hosts that pad their rows alone need).
  """
  num_queries, num_candidates = block_ids.shape
  queries = [query_ids[q] for q in range(num_queries) for _ in range(num_candidates)]
  blocks = block_ids.ravel()
  longest = int(pair_lengths(store, queries, blocks, max_length=max_length,
                             query_length=query_length).max())
  packed = pack_pairs(store, queries, blocks, query_length=query_length,
                      length=padded_length(longest, max_length, length_multiple))
  return TokenBatch(*(array.reshape(num_queries, num_candidates, -1) for array in packed))

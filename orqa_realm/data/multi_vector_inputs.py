"""Inputs of a multi-vector retriever, ColBERT's way (Khattab and Zaharia 2020): the token ids
BERT reads and, beside them, which output positions become vectors a score may use.

- A marker after [CLS] says which side the input is: `[unused0]` for queries ([Q]) and
  `[unused1]` for blocks ([D]), as ColBERT's tokenizers insert them.
- Query augmentation: a query is padded to its full length with [MASK] tokens. BERT does not
  attend to them (their attention mask stays 0, ColBERTv2's default), but their output vectors
  count in the score: they learn to re-weigh and expand the query's terms.
- Blocks skip punctuation: a wordpiece that is one ASCII punctuation character never becomes a
  vector a query token may match (ColBERT's `skiplist`); the block is still read whole.

The vector mask is separate from BERT's input mask because the two differ on both sides: all
positions of an augmented query count though most are not attended to, and punctuation is
attended to though it never counts.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from orqa_realm.data.tokenization import TokenBatch, Tokenizer

QUERY_MARKER = "[unused0]"
BLOCK_MARKER = "[unused1]"


class VectorInputs(NamedTuple):
  """Inputs of one side of a multi-vector retriever (a pytree, so it passes through `jit`)."""
  tokens: TokenBatch  # [batch, length]
  vector_mask: np.ndarray  # [batch, length] int32: 1 where the output vector may be scored


class MarkerIds(NamedTuple):
  """The special wordpieces of ColBERT-style inputs, looked up in a tokenizer's vocabulary."""
  query_marker: int
  block_marker: int
  mask: int
  punctuation: np.ndarray  # [p] int32 ids of the single-character punctuation wordpieces

  @classmethod
  def of(cls, tokenizer: Tokenizer) -> MarkerIds:
    vocab = tokenizer.hf_tokenizer.get_vocab()
    missing = [token for token in (QUERY_MARKER, BLOCK_MARKER) if token not in vocab]
    if missing:
      raise ValueError(f"the vocabulary of {tokenizer.model_dir} has no {', '.join(missing)}, "
                       "which mark queries and blocks")
    punctuation = sorted({ids[0] for ids in tokenizer.tokenize(list(string.punctuation))
                          if len(ids) == 1})
    return cls(vocab[QUERY_MARKER], vocab[BLOCK_MARKER], tokenizer.mask_id,
               np.array(punctuation, np.int32))


def with_marker(batch: TokenBatch, marker_id: int) -> TokenBatch:
  """`[CLS] ...` -> `[CLS] marker ...`: one column longer, the marker in segment 0 and
  attended to."""
  def insert(array: np.ndarray, value: int) -> np.ndarray:
    return np.concatenate([array[:, :1], np.full((len(array), 1), value, array.dtype),
                           array[:, 1:]], axis=1)

  return TokenBatch(insert(batch.token_ids, marker_id), insert(batch.segment_ids, 0),
                    insert(batch.input_mask, 1))


def query_inputs(tokenizer: Tokenizer, queries: Sequence[Sequence[int]], ids: MarkerIds, *,
                 length: int, markers: bool, augment: bool) -> VectorInputs:
  """[queries, length] inputs of query wordpieces (no special tokens): `[CLS] [Q] q [SEP]`,
  then [MASK] to `length` with `augment` (every position a vector) or padding (real tokens
  only)."""
  batch = tokenizer.pack(queries, max_length=length - 1 if markers else length)
  if markers:
    batch = with_marker(batch, ids.query_marker)
  if not augment:
    return VectorInputs(batch, batch.input_mask.copy())
  padding = batch.input_mask == 0
  augmented = TokenBatch(np.where(padding, ids.mask, batch.token_ids).astype(np.int32),
                         batch.segment_ids, batch.input_mask)
  return VectorInputs(augmented, np.ones_like(batch.input_mask))


def block_inputs(store, blocks: Sequence[int], ids: MarkerIds, *, length: int, block_format: str,
                 markers: bool, skip_punctuation: bool) -> VectorInputs:
  """[blocks, length] inputs of store blocks, `[CLS] [D] title text [SEP]` (or the `pair`
  format), with punctuation out of the vector mask when `skip_punctuation`."""
  batch = store.encode(blocks, length - 1 if markers else length, block_format)
  if markers:
    batch = with_marker(batch, ids.block_marker)
  vector_mask = batch.input_mask.copy()
  if skip_punctuation:
    vector_mask[np.isin(batch.token_ids, ids.punctuation)] = 0
  return VectorInputs(batch, vector_mask)


def block_input_lengths(store, block_format: str, markers: bool) -> np.ndarray:
  """[num_blocks] untruncated input length of every block, the marker included."""
  return store.input_lengths(block_format) + int(markers)

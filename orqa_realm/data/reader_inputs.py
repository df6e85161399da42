"""Reader inputs `[CLS] question [SEP] block [SEP]` and the way back from a span to the block's text.

The block part is the block's text wordpieces only (no title), as in the ORQA reference, so that
every span of the block maps back to a substring of its text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from orqa_realm.data.tokenization import TokenBatch, pack_inputs


class ReaderInputs(NamedTuple):
  tokens: TokenBatch  # [batch, length]
  block_mask: np.ndarray  # [batch, length] bool, True on the block's wordpieces
  block_offsets: np.ndarray  # [batch] int32 input position of each block's first wordpiece
  block_lengths: np.ndarray  # [batch] int32 block wordpieces that fit (after truncation)


def pack_reader_inputs(questions: Sequence[Sequence[int]], blocks: Sequence[Sequence[int]], *,
                       max_length: int, max_question_length: int, cls_id: int, sep_id: int,
                       pad_id: int) -> ReaderInputs:
  """Packs (question, block) wordpiece pairs; the question is cut to `max_question_length` and the
  block gets the remaining room (ORQA: 32 + 288 = 320 tokens)."""
  tokens = pack_inputs(questions, blocks, max_length, cls_id=cls_id, sep_id=sep_id, pad_id=pad_id,
                       max_first_length=max_question_length)
  second_segment = (tokens.segment_ids == 1) & (tokens.input_mask != 0)  # block + its [SEP]
  block_offsets = np.argmax(second_segment, axis=1).astype(np.int32)
  block_lengths = (second_segment.sum(axis=1) - 1).astype(np.int32)  # without the final [SEP]
  positions = np.arange(max_length)[None]
  block_mask = (positions >= block_offsets[:, None]) & (
      positions < (block_offsets + block_lengths)[:, None])
  return ReaderInputs(tokens, block_mask, block_offsets, block_lengths)


def span_text(block_text: str, token_offsets: Sequence[tuple[int, int]], block_offset: int,
              start: int, end: int) -> str:
  """The text of the reader's span (start, end) (input positions, inclusive) in its block.

  Args:
    token_offsets: (start, end) character offsets of the block's wordpieces in block_text.
    block_offset: input position of the block's first wordpiece.
  """
  first, last = start - block_offset, end - block_offset
  if not 0 <= first <= last < len(token_offsets):
    raise ValueError(f"span ({start}, {end}) is not inside the block at offset {block_offset} "
                     f"of {len(token_offsets)} wordpieces")
  return block_text[token_offsets[first][0]:token_offsets[last][1]]

"""Masking a query sentence for REALM's masked-language-model pretraining.

Three schemes, as in REALM's ablation (Guu et al. 2020, table 2; NQ exact match 38.2 with salient
spans, 35.3 with random spans, 32.3 with random tokens):

- "salient": every wordpiece of one salient span (a named entity or date, `salient_spans.py`).
- "random_token": BERT's scheme, 15% of the sentence's wordpieces chosen at random.
- "random_span": whole words forming one contiguous span, its length in wordpieces drawn from
  a geometric distribution (p = 0.2, as SpanBERT).

Every masked position is replaced by [MASK] (no 80/10/10 replacement: the three schemes then
differ only in what is masked). At most `max_masks` wordpieces are masked; a salient span longer
than that is never chosen (REALM masks whole spans).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

Masking = Literal["salient", "random_token", "random_span"]
MASKINGS: tuple[str, ...] = ("salient", "random_token", "random_span")
RANDOM_TOKEN_RATE = 0.15
RANDOM_SPAN_GEOMETRIC_P = 0.2


class MaskedQuery(NamedTuple):
  token_ids: np.ndarray  # [query wordpieces] int32, masked positions replaced by [MASK]
  mask_positions: np.ndarray  # [num_masks] int32 positions in token_ids, ascending
  targets: np.ndarray  # [num_masks] int32 the original wordpieces there


def apply_mask(token_ids: np.ndarray, positions: np.ndarray, mask_id: int) -> MaskedQuery:
  """Replaces `positions` of `token_ids` by `mask_id`."""
  token_ids = np.asarray(token_ids, np.int32)
  positions = np.sort(np.asarray(positions, np.int32))
  masked = token_ids.copy()
  masked[positions] = mask_id
  return MaskedQuery(masked, positions, token_ids[positions])


def window(start: int, end: int, span_start: int, span_end: int, max_length: int
           ) -> tuple[int, int]:
  """A window of at most `max_length` of [start, end) that holds [span_start, span_end), with
  the span as near its middle as the bounds allow."""
  if end - start <= max_length:
    return start, end
  if span_end - span_start > max_length:
    raise ValueError(f"a span of {span_end - span_start} wordpieces does not fit in "
                     f"{max_length}")
  first = span_start - (max_length - (span_end - span_start)) // 2
  first = min(max(first, start), end - max_length)
  return first, first + max_length


def random_token_positions(length: int, max_masks: int, rng: np.random.Generator) -> np.ndarray:
  """[num_masks] 15% of `length` positions (at least one, at most `max_masks`), ascending."""
  count = int(np.clip(round(RANDOM_TOKEN_RATE * length), 1, min(max_masks, length)))
  return np.sort(rng.choice(length, count, replace=False)).astype(np.int32)


def random_span_positions(is_word_start: np.ndarray, max_masks: int,
                          rng: np.random.Generator) -> np.ndarray:
  """[num_masks] the positions of a run of whole words: its target length in wordpieces is drawn
  from Geometric(0.2) (at most `max_masks`), its first word uniformly among words of at most
  `max_masks` wordpieces, and words are added while they fit the target (at least one word).

  Args:
    is_word_start: [length] bool, whether each wordpiece starts a word (position 0 always does).
  """
  starts = np.flatnonzero(is_word_start | (np.arange(len(is_word_start)) == 0))
  ends = np.append(starts[1:], len(is_word_start))
  word_lengths = ends - starts  # [num_words]
  candidates = np.flatnonzero(word_lengths <= max_masks)
  if not len(candidates):
    # Every word is too long to mask whole: mask the first max_masks pieces of a random word.
    word = int(rng.integers(len(starts)))
    return np.arange(starts[word], starts[word] + max_masks, dtype=np.int32)
  target = min(int(rng.geometric(RANDOM_SPAN_GEOMETRIC_P)), max_masks)
  first = int(candidates[rng.integers(len(candidates))])
  last = first
  while last + 1 < len(starts) and ends[last + 1] - starts[first] <= target:
    last += 1
  return np.arange(starts[first], ends[last], dtype=np.int32)

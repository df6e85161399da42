"""Which spans of a block are answers: the targets of ORQA's full loss.

A span is a correct answer when predicting it would score exact match: its text, normalised as
for SQuAD's EM (lowercase, no punctuation or articles), equals a normalised answer, and it starts
and ends on word boundaries (so "1930" is not found inside "1930s"). The reference compared the
normalised answer's wordpieces with the block's instead, which misses answers with punctuation
inside ("15-1", "Mann, Bradley and Hughes"): on the bundled SQuAD slice (every 8th question) it
found an answer span in the gold paragraph for 83% of questions, EM matching for 98.6% (the rest
are longer than 10 wordpieces). Regex answers (CuratedTREC) must match a span's whole text.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from orqa_realm.data.tokenization import Tokenizer
from orqa_realm.data.answers import (compile_answer_pattern, contains_normalized_answer,
                                normalize_answer, regex_match)

Span = tuple[int, int]  # (first, last) wordpiece of a block, inclusive


def continuation_mask(tokenizer: Tokenizer) -> np.ndarray:
  """[vocab_size] bool: True for WordPiece continuations ('##...'), which never start a word."""
  vocab = tokenizer.hf_tokenizer.get_vocab()
  mask = np.zeros(max(vocab.values()) + 1, bool)
  for piece, index in vocab.items():
    mask[index] = piece.startswith("##")
  return mask


def text_answer_spans(block_text: str, block_token_ids: np.ndarray,
                      token_offsets: Sequence[tuple[int, int]], answers: Sequence[str],
                      continuation: np.ndarray, max_span_width: int) -> list[Span]:
  """Spans of up to `max_span_width` wordpieces, on word boundaries, whose text normalises to a
  normalised answer.

  Args:
    block_text: the block's text.
    block_token_ids: [block_length] its wordpieces.
    token_offsets: [block_length] (start, end) character offsets of each wordpiece in block_text.
    answers: text answers.
    continuation: `continuation_mask` of the tokenizer.
  """
  normalized = {normalize_answer(answer) for answer in answers} - {""}
  if not normalized:
    return []
  is_continuation = continuation[np.asarray(block_token_ids)]  # [block_length]
  length = len(is_continuation)
  # A normalised span begins with its first word's first character, unless that word is an
  # article (dropped by normalisation): other starts cannot match and are skipped cheaply.
  first_characters = {answer[0] for answer in normalized}
  spans = []
  for start in range(length):
    first_piece = block_text[token_offsets[start][0]:token_offsets[start][1]].lower()
    if is_continuation[start] or not (first_piece[:1] in first_characters
                                      or first_piece in ("a", "an", "the")):
      continue
    for end in range(start, min(start + max_span_width, length)):
      if end + 1 < length and is_continuation[end + 1]:
        continue  # the span would end inside a word
      text = block_text[token_offsets[start][0]:token_offsets[end][1]]
      if normalize_answer(text) in normalized:
        spans.append((start, end))
  return spans


def regex_answer_spans(block_text: str, token_offsets: Sequence[tuple[int, int]],
                       patterns: Sequence[str], max_span_width: int) -> list[Span]:
  """Spans of up to `max_span_width` wordpieces whose text (from the first piece's first character
  to the last piece's last) a pattern matches whole, case-insensitively.

  Args:
    block_text: the block's text.
    token_offsets: [block_length] (start, end) character offsets of each wordpiece in block_text.
  """
  compiled = [compile_answer_pattern(pattern) for pattern in patterns]
  spans = []
  for start in range(len(token_offsets)):
    for end in range(start, min(start + max_span_width, len(token_offsets))):
      text = block_text[token_offsets[start][0]:token_offsets[end][1]]
      if any(pattern.fullmatch(text) for pattern in compiled):
        spans.append((start, end))
  return spans


def span_labels(starts: np.ndarray, ends: np.ndarray, block_offset: int,
                answer_spans: Sequence[Span]) -> np.ndarray:
  """[num_spans] bool: which of the reader's spans (positions in its input) are answer spans.

  Args:
    starts, ends: the reader's span candidates (`reader.enumerate_spans`), input positions.
    block_offset: input position of the block's first wordpiece.
    answer_spans: answer spans in block coordinates.
  """
  labels = np.zeros(len(starts), bool)
  if not answer_spans:
    return labels
  answers = np.asarray(answer_spans) + block_offset  # [answers, 2]
  matches = (starts[:, None] == answers[None, :, 0]) & (ends[:, None] == answers[None, :, 1])
  return matches.any(axis=1)


def block_answer_spans(store, block: int, answers: Sequence[str], kind: str,
                       continuation: np.ndarray, max_span_width: int) -> list[Span]:
  """The answer spans of block `block` of a `BlockStore`, in its wordpiece coordinates."""
  text, char_spans = store.text(block), store.token_char_spans(block)
  if kind == "regex":
    return regex_answer_spans(text, char_spans, answers, max_span_width)
  return text_answer_spans(text, store.token_ids(block), char_spans, answers, continuation,
                           max_span_width)


class BlockAnswerMatcher:
  """Which blocks of a store contain an answer (`metrics.has_answer`), fast enough for ORQA's
  early loss, which checks the top c = 5000 retrieved blocks of every question at every step:
  each block's normalised text is cached, so a check is one substring search."""

  def __init__(self, store, cache_size: int = 1 << 17):
    self.store = store
    self._normalized_text = functools.lru_cache(maxsize=cache_size)(
        lambda block: normalize_answer(store.text(block)))

  def has_answer(self, block_ids: Sequence[int], answers: Sequence[str], kind: str) -> np.ndarray:
    """[len(block_ids)] bool: whether each block's text contains one of `answers`."""
    if kind == "regex":
      return np.array([any(regex_match(self.store.text(int(block)), pattern) for pattern in answers)
                       for block in block_ids], bool)
    return np.array([contains_normalized_answer(self._normalized_text(int(block)), answers)
                     for block in block_ids], bool)

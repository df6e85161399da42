"""Reader inputs `[CLS] question [SEP] block [SEP]`, their answer-span labels, and the way back
from a span to the block's text.

The block part is the block's text wordpieces only (no title), as in the ORQA reference, so that
every span of the block maps back to a substring of its text. A batch of questions x retrieved
blocks is padded to its own longest input, rounded up to a multiple of `LENGTH_MULTIPLE` (few
compiled shapes, little padding: most SQuAD paragraphs are far shorter than 288 wordpieces).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from orqa_realm.data.answer_spans import block_answer_spans, span_labels
from orqa_realm.data.tokenization import TokenBatch, pack_inputs

LENGTH_MULTIPLE = 64


class Spans(NamedTuple):
  starts: np.ndarray  # [num_spans] int32 first token of each span
  ends: np.ndarray  # [num_spans] int32 last token of each span (inclusive)


def enumerate_spans(length: int, max_span_width: int) -> Spans:
  """Every (start, end) with 0 <= end - start < max_span_width and end < length, ordered by start
  then width: a static set, the same for every sequence of `length` tokens."""
  starts, widths = np.meshgrid(np.arange(length), np.arange(max_span_width), indexing="ij")
  starts, ends = starts.ravel(), (starts + widths).ravel()
  inside = ends < length
  return Spans(starts[inside].astype(np.int32), ends[inside].astype(np.int32))


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


class ReaderBatch(NamedTuple):
  """The reader's inputs for questions x their top k blocks, with answer-span labels."""
  inputs: TokenBatch  # [questions, k, length]
  block_mask: np.ndarray  # [questions, k, length] bool, True on the block's wordpieces
  block_offsets: np.ndarray  # [questions, k] int32 input position of each block's first piece
  span_is_answer: np.ndarray  # [questions, k, num_spans] bool over enumerate_spans(length, W)


def padded_length(longest: int, max_length: int, multiple: int = LENGTH_MULTIPLE) -> int:
  """`longest` rounded up to a multiple of `multiple`, at most `max_length`."""
  return min(math.ceil(longest / multiple) * multiple, max_length)


def reader_batch(store, question_ids: Sequence[Sequence[int]], block_ids: np.ndarray, *,
                 max_length: int, max_question_length: int, max_span_width: int,
                 continuation: np.ndarray, answers: Sequence | None = None,
                 length_multiple: int = LENGTH_MULTIPLE) -> ReaderBatch:
  """Packs each question with each of its blocks and labels the answer spans.

  Args:
    store: the `BlockStore` the block ids index.
    question_ids: [questions] wordpieces of each question (no special tokens).
    block_ids: [questions, k] the blocks read for each question.
    continuation: `answer_spans.continuation_mask` of the store's tokenizer.
    answers: [questions] (answers, kind) pairs; None: no labels (all False), e.g. to predict.
    length_multiple: inputs are padded to the batch's longest rounded up to this
      (`max_length`: every batch at full length).
  """
  num_questions, k = block_ids.shape
  questions = [question_ids[q][:max_question_length]
               for q in range(num_questions) for _ in range(k)]
  blocks = [store.token_ids(int(block)) for block in block_ids.ravel()]
  longest = max(len(question) + len(block) + 3 for question, block in zip(questions, blocks))
  length = padded_length(longest, max_length, length_multiple)
  special = store.manifest["tokenizer"]["special_ids"]
  packed = pack_reader_inputs(questions, blocks, max_length=length,
                              max_question_length=max_question_length, cls_id=special["cls"],
                              sep_id=special["sep"], pad_id=special["pad"])
  spans = enumerate_spans(length, max_span_width)
  labels = np.zeros((num_questions * k, len(spans.starts)), bool)
  if answers is not None:
    for row, block in enumerate(block_ids.ravel()):
      answer_texts, kind = answers[row // k]
      fitting = [(first, last) for first, last in block_answer_spans(
          store, int(block), answer_texts, kind, continuation, max_span_width)
                 if last < packed.block_lengths[row]]  # spans cut off by truncation are lost
      labels[row] = span_labels(spans.starts, spans.ends, int(packed.block_offsets[row]), fitting)
  reshape = lambda array: array.reshape(num_questions, k, *array.shape[1:])
  return ReaderBatch(inputs=TokenBatch(*(reshape(array) for array in packed.tokens)),
                     block_mask=reshape(packed.block_mask),
                     block_offsets=reshape(packed.block_offsets),
                     span_is_answer=reshape(labels))

"""REALM pretraining examples: masked query sentences drawn from a block store, and the
knowledge-augmented encoder's inputs for a query and its candidate documents.

An example ("unit") is, for salient masking, one salient span that lies inside one sentence and
has at most `max_masks` wordpieces (the query is that sentence with the span masked), and for
random masking one sentence of at least two wordpieces. An epoch visits every unit once in a
seeded order, and the random choices of a random masking are seeded by (seed, step, row): the
examples of a step are a pure function of (seed, step), so a resumed run sees the same ones.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from orqa_realm.core.errors import InputError
from orqa_realm.data.answer_spans import continuation_mask
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.masking import (MaskedQuery, Masking, apply_mask, random_span_positions,
                                     random_token_positions, window)
from orqa_realm.data.qa import question_indices
from orqa_realm.data.reader_inputs import padded_length
from orqa_realm.data.salient_spans import SalientSpans
from orqa_realm.data.tokenization import TokenBatch, Tokenizer


class REALMQuery(NamedTuple):
  block: int  # the block the query sentence comes from (its document is never retrieved)
  document: int
  masked: MaskedQuery  # the query's wordpieces (no special tokens), masked


class Units(NamedTuple):
  """The examples of an epoch, one row each."""
  blocks: np.ndarray  # [num_units] int64
  sentence_starts: np.ndarray  # [num_units] int64 first wordpiece of the sentence in the block
  sentence_ends: np.ndarray  # [num_units] int64 (exclusive)
  span_starts: np.ndarray  # [num_units] int64 the salient span (salient masking; else -1)
  span_ends: np.ndarray  # [num_units] int64 (exclusive)


def sentence_bounds(store: BlockStore, block: int) -> tuple[np.ndarray, np.ndarray]:
  """([sentences] starts, [sentences] ends) of a block's sentences, in its wordpieces."""
  starts = store.sentence_token_starts(block).astype(np.int64)
  ends = np.append(starts[1:], len(store.token_ids(block)))
  return starts, ends


def salient_units(store: BlockStore, spans: SalientSpans, max_masks: int) -> Units:
  """Every salient span of at most `max_masks` wordpieces inside one sentence."""
  rows = []
  for block in range(len(store)):
    block_spans = spans.array(block)
    if not len(block_spans):
      continue
    starts, ends = sentence_bounds(store, block)
    span_starts, span_ends = block_spans[:, 2].astype(np.int64), block_spans[:, 3].astype(np.int64)
    sentence = np.searchsorted(starts, span_starts, side="right") - 1
    keep = (span_ends <= ends[sentence]) & (span_ends - span_starts <= max_masks)
    for index in np.flatnonzero(keep):
      rows.append((block, starts[sentence[index]], ends[sentence[index]], span_starts[index],
                   span_ends[index]))
  return _units(rows)


def sentence_units(store: BlockStore) -> Units:
  """Every sentence of at least two wordpieces (random masking)."""
  rows = []
  for block in range(len(store)):
    starts, ends = sentence_bounds(store, block)
    rows += [(block, start, end, -1, -1) for start, end in zip(starts, ends) if end - start >= 2]
  return _units(rows)


def _units(rows: list[tuple[int, ...]]) -> Units:
  columns = np.array(rows, np.int64).reshape(-1, 5)
  return Units(*(columns[:, field] for field in range(5)))


def split_documents(store: BlockStore, heldout_fraction: float,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(training blocks, held-out blocks): the blocks of a seeded random `heldout_fraction` of the
  store's documents are held out, so that no held-out sentence's document is trained on."""
  documents = np.asarray(store.document_indices())
  num_documents = int(documents.max()) + 1
  order = np.random.default_rng([seed, 1 << 21]).permutation(num_documents)
  heldout = np.isin(documents, order[:int(round(num_documents * heldout_fraction))])
  return np.flatnonzero(~heldout), np.flatnonzero(heldout)


class REALMExamples:
  """The masked queries of each training step, deterministic in (seed, step).

  Args:
    store: the block store the queries come from (also the retrieval corpus, as in REALM).
    masking: one of `masking.MASKINGS`.
    spans: the store's salient spans (needed for salient masking).
    continuation: [vocab] bool, WordPiece continuations (`answer_spans.continuation_mask`), for
      whole-word random spans.
    query_length: the query encoder's input length; the query keeps query_length - 2 wordpieces.
    blocks: the blocks whose sentences are examples (default: all of the store's).
  """

  def __init__(self, store: BlockStore, *, masking: Masking, max_masks: int, query_length: int,
               mask_id: int, seed: int, continuation: np.ndarray,
               spans: SalientSpans | None = None, blocks: np.ndarray | None = None):
    if masking == "salient":
      if spans is None:
        raise ValueError("salient masking needs the store's salient spans")
      self.units = salient_units(store, spans, max_masks)
    elif masking in ("random_token", "random_span"):
      self.units = sentence_units(store)
    else:
      raise ValueError(f"masking {masking!r} is not one of salient, random_token, random_span")
    if blocks is not None:
      self.units = Units(*(column[np.isin(self.units.blocks, blocks)] for column in self.units))
    if not len(self.units.blocks):
      raise ValueError(f"the block store has nothing to mask with {masking!r} masking")
    self.store = store
    self.masking = masking
    self.max_masks = max_masks
    self.max_query_tokens = query_length - 2
    self.mask_id = mask_id
    self.seed = seed
    self.continuation = continuation

  def __len__(self) -> int:
    return len(self.units.blocks)

  def query(self, unit: int, rng: np.random.Generator) -> REALMQuery:
    """The masked query of one unit; `rng` drives random masking."""
    units = self.units
    block = int(units.blocks[unit])
    token_ids = self.store.token_ids(block)
    start, end = int(units.sentence_starts[unit]), int(units.sentence_ends[unit])
    if self.masking == "salient":
      span_start, span_end = int(units.span_starts[unit]), int(units.span_ends[unit])
      first, last = window(start, end, span_start, span_end, self.max_query_tokens)
      positions = np.arange(span_start - first, span_end - first)
    else:
      first, last = start, min(end, start + self.max_query_tokens)
      if self.masking == "random_token":
        positions = random_token_positions(last - first, self.max_masks, rng)
      else:
        positions = random_span_positions(~self.continuation[token_ids[first:last]],
                                          self.max_masks, rng)
    return REALMQuery(block, self.store.document_index(block),
                      apply_mask(token_ids[first:last], positions, self.mask_id))

  def batch(self, step: int, batch_size: int, rows: slice = slice(None)) -> list[REALMQuery]:
    """Rows `rows` (default: all) of the `batch_size` queries of step `step`."""
    units = question_indices(len(self), batch_size, seed=self.seed, step=step)
    return [self.query(int(units[row]), np.random.default_rng([self.seed, step, row]))
            for row in range(batch_size)[rows]]


class KnowledgeInputs(NamedTuple):
  """The knowledge-augmented encoder's inputs for queries x candidate documents."""
  tokens: TokenBatch  # [queries, candidates, length]: [CLS] masked query [SEP] document [SEP]
  mask_positions: np.ndarray  # [queries, max_masks] int32 input positions of the masks
  targets: np.ndarray  # [queries, max_masks] int32 the masked wordpieces
  target_mask: np.ndarray  # [queries, max_masks] bool, False on padding rows of the two above


# Knowledge-encoder inputs are padded to a multiple of this (few compiled shapes).
KNOWLEDGE_LENGTH_MULTIPLE = 64


def knowledge_inputs(store: BlockStore, queries: Sequence[REALMQuery], candidates: np.ndarray, *,
                     max_query_length: int, max_document_length: int, max_masks: int,
                     length_multiple: int = KNOWLEDGE_LENGTH_MULTIPLE) -> KnowledgeInputs:
  """`[CLS] query [SEP] document [SEP]` for each query and candidate; candidate -1 is the null
  document (no wordpieces). The document is the block's text wordpieces, as the ORQA reader
  reads them (so that a REALM encoder initialises that reader), cut to `max_document_length`;
  the query keeps its whole window (at most max_query_length - 2 wordpieces), so the masks sit
  at the same positions, 1 + their query position, for every candidate. Inputs are padded to
  the batch's longest, rounded up to `length_multiple`.

  Args:
    candidates: [queries, k] block ids, -1 for the null document.
  """
  num_queries, k = candidates.shape
  query_ids = [query.masked.token_ids[:max_query_length - 2] for query in queries]
  documents = [np.zeros(0, np.int32) if block < 0
               else store.token_ids(int(block))[:max_document_length - 1]
               for block in candidates.ravel()]
  firsts = [query_ids[row // k] for row in range(num_queries * k)]
  longest = max(len(first) + len(document) + 3 for first, document in zip(firsts, documents))
  length = padded_length(longest, max_query_length + max_document_length, length_multiple)
  tokens = store.pack(firsts, documents, max_length=length)
  mask_positions = np.zeros((num_queries, max_masks), np.int32)
  targets = np.zeros((num_queries, max_masks), np.int32)
  target_mask = np.zeros((num_queries, max_masks), bool)
  for row, query in enumerate(queries):
    count = len(query.masked.mask_positions)
    if count > max_masks:
      raise ValueError(f"query {row} has {count} masks, more than max_masks={max_masks}")
    mask_positions[row, :count] = 1 + query.masked.mask_positions  # after [CLS]
    targets[row, :count] = query.masked.targets
    target_mask[row, :count] = True
  reshape = lambda array: array.reshape(num_queries, k, length)
  return KnowledgeInputs(TokenBatch(*(reshape(array) for array in tokens)), mask_positions,
                         targets, target_mask)


def masked_examples(store: BlockStore, tokenizer: Tokenizer, masking: Masking, *, max_masks: int,
                    query_length: int, heldout_fraction: float, with_heldout: bool,
                    seed: int) -> tuple[REALMExamples, REALMExamples | None]:
  """The masked sentences of the training documents, and of the held-out ones: a seeded
  `heldout_fraction` of the store's documents (the same split for the same store, fraction and
  seed, so that an MLM run and the REALM run it starts hold out the same documents). Without
  `with_heldout` nothing is held out, and the second is None."""
  if with_heldout:
    train_blocks, heldout_blocks = split_documents(store, heldout_fraction, seed)
  else:
    train_blocks, heldout_blocks = np.arange(len(store)), np.zeros(0, np.int64)
  examples = functools.partial(
      REALMExamples, store, masking=masking, max_masks=max_masks, query_length=query_length,
      mask_id=tokenizer.mask_id, continuation=continuation_mask(tokenizer),
      spans=SalientSpans(store) if masking == "salient" else None)
  try:
    return (examples(seed=seed, blocks=train_blocks),
            examples(seed=seed + 1, blocks=heldout_blocks)
            if with_heldout and len(heldout_blocks) else None)
  except ValueError as e:
    raise InputError(str(e), path=store.directory) from e

"""Spider's examples (Ram et al., 2022): recurring spans between passages of one document.

Two blocks of the same document that share a span (an n-gram of `min_span` to `max_span`
wordpieces, starting and ending on word boundaries, with at least one content word: not a
stopword, not punctuation) are a query and its positive: the query is a window of
`query_window` wordpieces of the first block around the span, the span itself removed with
probability `remove_prob`; the positive is the second block. A block of the same document
without the span is the query's hard negative, when the document has one. The shared span
picked for a pair is the longest (ties: the first in the query block).

Batches are a pure function of (seed, step), as ICT's: blocks with a partner are visited in one
random order per epoch, and each example's choices come from (seed, epoch, position).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from orqa_realm.data.blocks import BlockFormat, BlockStore
from orqa_realm.data.tokenization import TokenBatch


class SpiderSettings(NamedTuple):
  min_span: int = 2  # wordpieces of the shortest recurring span
  max_span: int = 10  # and of the longest (the paper's limit)
  query_window: int = 64  # wordpieces of the query, the span included
  remove_prob: float = 0.5  # probability of removing the span from the query


class SpiderExample(NamedTuple):
  query: np.ndarray  # wordpieces of the query window
  positive: int  # block holding the span
  negative: int  # block of the same document without it; -1 when there is none


class SpiderBatch(NamedTuple):
  queries: TokenBatch  # [batch, query_length]
  # [batch x 2, block_length]: each query's positive, then its negative (a block of another
  # document for a query whose document has none without the span)
  blocks: TokenBatch
  block_ids: np.ndarray  # [batch x 2] int64


def span_boundaries(tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """([n] bool may a span start here, [n] bool may a span end here): not inside a word (a
  WordPiece continuation "##..." neither starts a span nor follows its end)."""
  continuation = np.asarray([token.startswith("##") for token in tokens], dtype=bool)
  starts = ~continuation
  ends = np.append(~continuation[1:], True)
  return starts, ends


def longest_shared_span(first: np.ndarray, second: np.ndarray, settings: SpiderSettings,
                        boundaries: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                        content: Callable[[np.ndarray], bool]) -> tuple[int, int] | None:
  """(start, end) in `first` of the longest n-gram of `first` also in `second`, of
  `min_span`..`max_span` wordpieces on word boundaries with a content word; None if none."""
  first_starts, first_ends = boundaries(first)
  second_starts, second_ends = boundaries(second)
  for length in range(min(settings.max_span, len(first), len(second)), settings.min_span - 1,
                      -1):
    in_second = {tuple(second[i:i + length]) for i in range(len(second) - length + 1)
                 if second_starts[i] and second_ends[i + length - 1]}
    for start in range(len(first) - length + 1):
      if not (first_starts[start] and first_ends[start + length - 1]):
        continue
      span = first[start:start + length]
      if tuple(span) in in_second and content(span):
        return start, start + length
  return None


def contains(token_ids: np.ndarray, span: np.ndarray) -> bool:
  """Whether `span` occurs in `token_ids`."""
  length = len(span)
  return any(np.array_equal(token_ids[i:i + length], span)
             for i in range(len(token_ids) - length + 1))


def query_window(token_ids: np.ndarray, start: int, end: int, settings: SpiderSettings,
                 remove: bool, rng: np.random.Generator) -> np.ndarray:
  """`query_window` wordpieces of `token_ids` around [start, end) at a random offset, the
  span dropped when `remove`."""
  width = min(settings.query_window, len(token_ids))
  earliest, latest = max(0, end - width), min(start, len(token_ids) - width)
  left = int(rng.integers(earliest, max(earliest, latest) + 1))
  window = token_ids[left:left + width]
  if not remove:
    return window
  return np.concatenate([window[:start - left], window[end - left:]])


def title_groups(store: BlockStore) -> np.ndarray:
  """[num_blocks] int64: blocks whose documents have the same title share a group (SQuAD's
  paragraphs of one article)."""
  ids: dict[tuple[int, ...], int] = {}
  return np.asarray([ids.setdefault(tuple(store.title_token_ids(block).tolist()), len(ids))
                     for block in range(len(store))], dtype=np.int64)


class SpiderSampler:
  """Global Spider batches from a block store, deterministic in (seed, step).

  Args:
    tokens: wordpiece ids -> their strings (word boundaries).
    is_content: a span's wordpiece ids -> whether it holds a content word.
    groups: [num_blocks] int, the document each block belongs to as Spider means it (the
      store's documents, or `title_groups` where a store's documents are an article's
      paragraphs, as SQuAD's are).
    candidate_blocks: the blocks (and documents) examples come from, e.g. a training split.
  """

  def __init__(self, store: BlockStore, *, batch_size: int, settings: SpiderSettings,
               tokens: Callable[[np.ndarray], Sequence[str]],
               is_content: Callable[[np.ndarray], bool], groups: np.ndarray, query_length: int,
               block_length: int, block_format: BlockFormat = "pair", seed: int = 0,
               candidate_blocks: np.ndarray | None = None):
    candidates = (np.arange(len(store)) if candidate_blocks is None
                  else np.asarray(candidate_blocks, dtype=np.int64))
    self._groups = np.asarray(groups)
    documents = self._groups[candidates]
    self._document_blocks: dict[int, np.ndarray] = {
        int(document): candidates[documents == document] for document in np.unique(documents)}
    # A block is a query's source only if its document has another block.
    self._sources = np.asarray([block for block, document in zip(candidates, documents)
                                if len(self._document_blocks[int(document)]) > 1], np.int64)
    if len(self._sources) < batch_size:
      raise ValueError(f"{len(self._sources)} blocks share a document with another, fewer than "
                       f"one batch of {batch_size}")
    self.store, self.batch_size, self.settings, self.seed = store, batch_size, settings, seed
    self.query_length, self.block_length, self.block_format = (query_length, block_length,
                                                               block_format)
    self._tokens, self._is_content = tokens, is_content
    self._orders: dict[int, np.ndarray] = {}

  def _order(self, epoch: int) -> np.ndarray:
    if epoch not in self._orders:
      self._orders[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self._sources)
      for stale in [e for e in self._orders if e < epoch - 1]:
        del self._orders[stale]
    return self._orders[epoch]

  def _other_document_block(self, block: int, position: int) -> int:
    """A random block of another document than `block`'s (of `block`'s own when there is no
    other): the negative of a query whose document has none without the span."""
    document = int(self._groups[block])
    others = [d for d in self._document_blocks if d != document] or [document]
    rng = np.random.default_rng([self.seed, position, 3])
    return int(rng.choice(self._document_blocks[others[rng.integers(len(others))]]))

  def _boundaries(self, token_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return span_boundaries(self._tokens(token_ids))

  def example(self, position: int) -> SpiderExample:
    """The position-th example of the run. A source block that shares no span with any block of
    its document falls back to a random one of them as the positive and its own first window as
    the query."""
    epoch, offset = divmod(position, len(self._sources))
    source = int(self._order(epoch)[offset])
    rng = np.random.default_rng([self.seed, epoch, offset, 2])
    siblings = self._document_blocks[int(self._groups[source])]
    partners = rng.permutation(siblings[siblings != source])
    token_ids = self.store.token_ids(source)
    for partner in partners:
      partner_ids = self.store.token_ids(int(partner))
      found = longest_shared_span(token_ids, partner_ids, self.settings, self._boundaries,
                                  self._is_content)
      if found is None:
        continue
      start, end = found
      span = token_ids[start:end]
      without = [int(block) for block in partners
                 if block != partner and not contains(self.store.token_ids(int(block)), span)]
      remove = bool(rng.random() < self.settings.remove_prob)
      return SpiderExample(query_window(token_ids, start, end, self.settings, remove, rng),
                           int(partner), without[0] if without else -1)
    return SpiderExample(query_window(token_ids, 0, 0, self.settings, False, rng),
                         int(partners[0]), -1)

  def batch(self, step: int, rows: slice = slice(None)) -> SpiderBatch:
    """Rows `rows` (default: all) of the global batch of step `step`; only those are built."""
    positions = range(step * self.batch_size, (step + 1) * self.batch_size)[rows]
    examples = [self.example(position) for position in positions]
    block_ids = []
    for position, example in zip(positions, examples):
      negative = (example.negative if example.negative >= 0
                  else self._other_document_block(example.positive, position))
      block_ids += [example.positive, negative]
    store = self.store
    return SpiderBatch(
        queries=store.pack([e.query for e in examples], max_length=self.query_length),
        blocks=store.pack_blocks([store.title_token_ids(b) for b in block_ids],
                                 [store.token_ids(b) for b in block_ids],
                                 max_length=self.block_length, block_format=self.block_format),
        block_ids=np.asarray(block_ids, dtype=np.int64))

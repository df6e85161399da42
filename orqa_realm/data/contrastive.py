"""Positive pairs made from a block alone, for label-free contrastive pretraining.

Contriever (Izacard et al., 2021) draws two *independent crops* of a document, each a random
span of a random fraction of its wordpieces (`crop_ratio`, 0.1 to 0.5 in the paper), and deletes
each wordpiece of a view with probability `delete_prob` (0.1). SimCSE (Gao et al., 2021) encodes
the same text twice: the two views are identical and the encoder's dropout makes them differ.

Batches are a pure function of (seed, step): blocks are visited in one random order per epoch,
and each example's random choices come from (seed, epoch, position in the epoch), so a resumed
run, or a host building only its own rows, sees the same views.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.tokenization import TokenBatch


class ViewSettings(NamedTuple):
  """How one view is drawn from a block's wordpieces."""
  min_crop_ratio: float  # the shortest crop, as a fraction of the block
  max_crop_ratio: float  # the longest (1.0 and 1.0: the whole block)
  delete_prob: float  # probability of deleting each wordpiece of the crop


class ContrastiveBatch(NamedTuple):
  queries: TokenBatch  # [batch, query_length]: [CLS] view 1 [SEP]
  keys: TokenBatch  # [batch, key_length]: [CLS] view 2 [SEP]
  block_indices: np.ndarray  # [batch] int64, the block both views come from


def random_crop(token_ids: np.ndarray, settings: ViewSettings,
                rng: np.random.Generator) -> np.ndarray:
  """A contiguous span of round(ratio x len) wordpieces (at least one), ratio uniform in
  [min_crop_ratio, max_crop_ratio], at a uniform start."""
  ratio = rng.uniform(settings.min_crop_ratio, settings.max_crop_ratio)
  length = min(len(token_ids), max(1, round(ratio * len(token_ids))))
  start = rng.integers(0, len(token_ids) - length + 1)
  return token_ids[start:start + length]


def delete_tokens(token_ids: np.ndarray, delete_prob: float,
                  rng: np.random.Generator) -> np.ndarray:
  """`token_ids` with each wordpiece dropped with probability `delete_prob`; one is kept when
  all would go, so that a view is never empty."""
  if delete_prob <= 0.0:
    return token_ids
  kept = rng.random(len(token_ids)) >= delete_prob
  if not kept.any():
    kept[rng.integers(len(token_ids))] = True
  return token_ids[kept]


def draw_view(token_ids: np.ndarray, settings: ViewSettings,
              rng: np.random.Generator) -> np.ndarray:
  """One augmented view of a block's wordpieces: a random crop, then token deletion."""
  return delete_tokens(random_crop(token_ids, settings, rng), settings.delete_prob, rng)


class ContrastiveSampler:
  """Global batches of (view, view) pairs of the blocks `candidate_blocks` of `store`.

  Args:
    independent: draw the key view independently of the query view (Contriever); False: the
      key is the query view itself (SimCSE), cut to what both lengths hold so that the two
      inputs are the same.
  """

  def __init__(self, store: BlockStore, *, batch_size: int, settings: ViewSettings,
               independent: bool, query_length: int, key_length: int, seed: int = 0,
               candidate_blocks: np.ndarray | None = None):
    candidates = (np.arange(len(store)) if candidate_blocks is None
                  else np.asarray(candidate_blocks, dtype=np.int64))
    # A block with no text has nothing to crop.
    self._candidates = candidates[store.token_lengths()[candidates] > 0]
    if len(self._candidates) < batch_size:
      raise ValueError(f"{len(self._candidates)} blocks with text, fewer than one batch of "
                       f"{batch_size}")
    self.store, self.batch_size, self.settings = store, batch_size, settings
    self.independent, self.seed = independent, seed
    self.query_length, self.key_length = query_length, key_length
    self._orders: dict[int, np.ndarray] = {}

  def _order(self, epoch: int) -> np.ndarray:
    """The blocks in epoch `epoch`'s order (the last two cached: a batch spans at most two)."""
    if epoch not in self._orders:
      self._orders[epoch] = np.random.default_rng([self.seed, epoch]).permutation(
          self._candidates)
      for stale in [e for e in self._orders if e < epoch - 1]:
        del self._orders[stale]
    return self._orders[epoch]

  def example(self, position: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(block, query view, key view) of the position-th example of the run."""
    epoch, offset = divmod(position, len(self._candidates))
    block = int(self._order(epoch)[offset])
    rng = np.random.default_rng([self.seed, epoch, offset, 1])
    token_ids = self.store.token_ids(block)
    query = draw_view(token_ids, self.settings, rng)
    if self.independent:
      return block, query, draw_view(token_ids, self.settings, rng)
    query = query[:min(self.query_length, self.key_length) - 2]  # [CLS] and [SEP] added
    return block, query, query

  def batch(self, step: int, rows: slice = slice(None)) -> ContrastiveBatch:
    """Rows `rows` (default: all) of the global batch of step `step`; only those are read."""
    positions = range(step * self.batch_size, (step + 1) * self.batch_size)[rows]
    blocks, queries, keys = zip(*(self.example(position) for position in positions))
    return ContrastiveBatch(queries=self.store.pack(queries, max_length=self.query_length),
                            keys=self.store.pack(keys, max_length=self.key_length),
                            block_indices=np.asarray(blocks, dtype=np.int64))

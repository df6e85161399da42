"""Inverse Cloze Task examples (ORQA): a sentence of a block is the pseudo-query for its block.

The query sentence is removed from the block with probability `remove_prob` (0.9), so that the
retriever learns more than word matching while still seeing some exact matches; a one-sentence
block whose sentence would be removed has nothing left and is skipped. Batches are a pure function
of (seed, step): each epoch's order and choices are drawn from (seed, epoch), so a run resumed at
any step sees the same batches as one that never stopped.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from orqa_realm.data.blocks import BlockFormat, BlockStore
from orqa_realm.data.tokenization import TokenBatch


class ICTBatch(NamedTuple):
  queries: TokenBatch  # [batch, query_length]: [CLS] sentence [SEP]
  blocks: TokenBatch  # [batch, block_length]: [CLS] title [SEP] block (minus sentence) [SEP]
  block_indices: np.ndarray  # [batch] int64, the positive block of each query
  removed: np.ndarray  # [batch] bool, whether the query sentence was removed from its block


class EpochPlan(NamedTuple):
  blocks: np.ndarray  # [num_examples] int64 block index, in this epoch's order
  sentences: np.ndarray  # [num_examples] int64 which sentence of the block is the query
  removed: np.ndarray  # [num_examples] bool


def plan_epoch(candidate_blocks: np.ndarray, sentence_counts: np.ndarray, *, seed: int,
               epoch: int, remove_prob: float) -> EpochPlan:
  """One pass over `candidate_blocks` in a random order, with each example's random choices.

  Args:
    candidate_blocks: [num_candidates] block indices to draw from (e.g. the training split).
    sentence_counts: [num_blocks] sentences per block of the whole store.
  """
  rng = np.random.default_rng([seed, epoch])
  order = rng.permutation(candidate_blocks)
  counts = sentence_counts[order]
  sentences = np.floor(rng.random(len(order)) * counts).astype(np.int64)
  removed = rng.random(len(order)) < remove_prob
  keep = (counts > 0) & ~(removed & (counts == 1))
  return EpochPlan(blocks=order[keep].astype(np.int64), sentences=sentences[keep],
                   removed=removed[keep])


class TooFewExamples(ValueError):
  """An epoch of the candidate blocks holds fewer ICT examples than one batch."""

  def __init__(self, num_blocks: int, num_examples: int, batch_size: int):
    self.num_blocks, self.num_examples, self.batch_size = num_blocks, num_examples, batch_size
    super().__init__(f"an epoch of {num_blocks} blocks has {num_examples} ICT examples, fewer "
                     f"than one batch of {batch_size}")


class ICTSampler:
  """Global ICT batches from a block store, deterministic in (seed, step)."""

  def __init__(self, store: BlockStore, *, batch_size: int, query_length: int = 64,
               block_length: int = 288, remove_prob: float = 0.9, seed: int = 0,
               candidate_blocks: np.ndarray | None = None, block_format: BlockFormat = "pair"):
    self.store = store
    self.block_format = block_format
    self.batch_size = batch_size
    self.query_length = query_length
    self.block_length = block_length
    self.remove_prob = remove_prob
    self.seed = seed
    self._sentence_counts = store.sentence_counts()
    self._candidates = (np.arange(len(store)) if candidate_blocks is None
                        else np.asarray(candidate_blocks, dtype=np.int64))
    self._epoch_sizes: list[int] = []  # examples per epoch, filled in as epochs are planned
    self._plans: dict[int, EpochPlan] = {}
    if len(self.plan(0).blocks) < batch_size:
      raise TooFewExamples(len(self._candidates), len(self.plan(0).blocks), batch_size)

  def plan(self, epoch: int) -> EpochPlan:
    """The plan of one epoch (the last two are cached: a batch spans at most two epochs)."""
    if epoch not in self._plans:
      self._plans[epoch] = plan_epoch(self._candidates, self._sentence_counts, seed=self.seed,
                                      epoch=epoch, remove_prob=self.remove_prob)
      for stale in [e for e in self._plans if e < epoch - 1]:
        del self._plans[stale]
    return self._plans[epoch]

  def _epoch_size(self, epoch: int) -> int:
    while len(self._epoch_sizes) <= epoch:
      self._epoch_sizes.append(len(self.plan(len(self._epoch_sizes)).blocks))
    return self._epoch_sizes[epoch]

  def _locate(self, position: int) -> tuple[int, int]:
    """(epoch, offset in that epoch) of the position-th example of the run."""
    epoch = 0
    while position >= self._epoch_size(epoch):
      position -= self._epoch_size(epoch)
      epoch += 1
    return epoch, position

  def example(self, block: int, sentence: int, removed: bool) -> tuple[np.ndarray, np.ndarray]:
    """(query wordpieces, block-text wordpieces) of one ICT example."""
    token_ids = self.store.token_ids(block)
    starts = self.store.sentence_token_starts(block)
    start = starts[sentence]
    end = starts[sentence + 1] if sentence + 1 < len(starts) else len(token_ids)
    query = token_ids[start:end]
    context = np.concatenate([token_ids[:start], token_ids[end:]]) if removed else token_ids
    return query, context

  def batch(self, step: int, rows: slice = slice(None)) -> ICTBatch:
    """Rows `rows` (default: all) of the global batch of training step `step`; only those rows
    are read and packed."""
    epoch, offset = self._locate(step * self.batch_size)
    blocks, sentences, removed = [], [], []
    while len(blocks) < self.batch_size:
      plan = self.plan(epoch)
      take = min(self.batch_size - len(blocks), len(plan.blocks) - offset)
      blocks += list(plan.blocks[offset:offset + take])
      sentences += list(plan.sentences[offset:offset + take])
      removed += list(plan.removed[offset:offset + take])
      epoch, offset = epoch + 1, 0
    blocks, sentences, removed = blocks[rows], sentences[rows], removed[rows]
    queries, contexts = zip(*(self.example(b, s, r) for b, s, r in zip(blocks, sentences, removed)))
    return ICTBatch(
        queries=self.store.pack(queries, max_length=self.query_length),
        blocks=self.store.pack_blocks([self.store.title_token_ids(b) for b in blocks], contexts,
                                      max_length=self.block_length, block_format=self.block_format),
        block_indices=np.asarray(blocks, dtype=np.int64),
        removed=np.asarray(removed, dtype=bool))

"""Contriever's and SimCSE's view pairs: crops within their ratio bounds, deletion at its rate,
identical SimCSE views, batches a function of (seed, step), a host's rows those of the batch."""

import numpy as np
import pytest

from orqa_realm.data import contrastive
from orqa_realm.data.contrastive import ViewSettings

CONTRIEVER = ViewSettings(0.1, 0.5, 0.1)


def contains_in_order(sequence, subsequence) -> bool:
  """Whether `subsequence` is `sequence` with some items left out."""
  items = iter(sequence.tolist())
  return all(item in items for item in subsequence.tolist())


def test_random_crop_is_a_span_of_the_drawn_length():
  token_ids = np.arange(1000, 1200)
  rng = np.random.default_rng(0)
  lengths = []
  for _ in range(500):
    crop = contrastive.random_crop(token_ids, CONTRIEVER, rng)
    assert (np.diff(crop) == 1).all()  # contiguous
    lengths.append(len(crop))
  assert min(lengths) >= 20 and max(lengths) <= 100  # 0.1 and 0.5 of 200
  assert np.mean(lengths) == pytest.approx(60, rel=0.05)  # uniform ratio: mean 0.3 x 200


def test_deletion_drops_each_wordpiece_at_its_rate_and_never_all():
  rng = np.random.default_rng(1)
  token_ids = np.arange(10_000)
  kept = contrastive.delete_tokens(token_ids, 0.1, rng)
  assert len(kept) / len(token_ids) == pytest.approx(0.9, abs=0.01)
  assert contains_in_order(token_ids, kept)
  assert len(contrastive.delete_tokens(np.arange(3), 1.0, rng)) == 1
  np.testing.assert_array_equal(contrastive.delete_tokens(token_ids, 0.0, rng), token_ids)


@pytest.fixture(scope="module")
def contriever(squad_block_store):
  return contrastive.ContrastiveSampler(squad_block_store, batch_size=32, settings=CONTRIEVER,
                                        independent=True, query_length=64, key_length=64)


def test_views_are_pieces_of_their_block(squad_block_store, contriever):
  differing = 0
  for position in range(64):
    block, query, key = contriever.example(position)
    token_ids = squad_block_store.token_ids(block)
    assert contains_in_order(token_ids, query) and contains_in_order(token_ids, key)
    differing += not np.array_equal(query, key)
  assert differing >= 60  # independent crops


def test_simcse_views_are_the_same_text(squad_block_store):
  sampler = contrastive.ContrastiveSampler(
      squad_block_store, batch_size=8, settings=ViewSettings(1.0, 1.0, 0.0), independent=False,
      query_length=32, key_length=48)
  batch = sampler.batch(0)
  np.testing.assert_array_equal(batch.queries.token_ids, batch.keys.token_ids[:, :32])
  for row, block in enumerate(batch.block_indices):  # the block's first 30 wordpieces
    expected = squad_block_store.token_ids(block)[:30]
    np.testing.assert_array_equal(batch.queries.token_ids[row, 1:1 + len(expected)], expected)


def test_batches_are_a_function_of_seed_and_step(squad_block_store, contriever):
  again = contrastive.ContrastiveSampler(squad_block_store, batch_size=32, settings=CONTRIEVER,
                                         independent=True, query_length=64, key_length=64)
  steps_per_epoch = len(squad_block_store) // 32
  for step in (0, 5, steps_per_epoch + 1):  # the last lies in the second epoch
    first, second = contriever.batch(step), again.batch(step)
    np.testing.assert_array_equal(first.block_indices, second.block_indices)
    np.testing.assert_array_equal(first.queries.token_ids, second.queries.token_ids)
    np.testing.assert_array_equal(first.keys.token_ids, second.keys.token_ids)
  # An epoch visits every block once.
  epoch = np.concatenate([contriever.batch(step).block_indices for step in range(steps_per_epoch)])
  assert len(set(epoch.tolist())) == len(epoch)
  whole, rows = contriever.batch(3), contriever.batch(3, slice(16, 32))
  np.testing.assert_array_equal(rows.queries.token_ids, whole.queries.token_ids[16:])
  np.testing.assert_array_equal(rows.keys.token_ids, whole.keys.token_ids[16:])


def test_too_few_blocks_for_a_batch_is_refused(squad_block_store):
  with pytest.raises(ValueError, match="fewer than one batch of 64"):
    contrastive.ContrastiveSampler(squad_block_store, batch_size=64, settings=CONTRIEVER,
                                   independent=True, query_length=16, key_length=16,
                                   candidate_blocks=np.arange(10))

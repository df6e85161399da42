"""ICT examples: removal, skipping of one-sentence blocks, determinism in (seed, step)."""

import numpy as np
import pytest

from orqa_realm.data import ict


@pytest.fixture(scope="module")
def sampler(squad_block_store):
  return ict.ICTSampler(squad_block_store, batch_size=64, query_length=48, block_length=288)


def test_batches_are_a_function_of_seed_and_step(squad_block_store, sampler):
  again = ict.ICTSampler(squad_block_store, batch_size=64, query_length=48, block_length=288)
  for step in (0, 7, 30):  # 30 * 64 lies past the first epoch (about 1,590 examples)
    first, second = sampler.batch(step), again.batch(step)
    np.testing.assert_array_equal(first.block_indices, second.block_indices)
    np.testing.assert_array_equal(first.queries.token_ids, second.queries.token_ids)
    np.testing.assert_array_equal(first.blocks.token_ids, second.blocks.token_ids)
  assert not np.array_equal(sampler.batch(0).block_indices, sampler.batch(1).block_indices)
  other_seed = ict.ICTSampler(squad_block_store, batch_size=64, seed=1)
  assert not np.array_equal(other_seed.batch(0).block_indices, sampler.batch(0).block_indices)


def test_a_hosts_rows_are_those_rows_of_the_whole_batch(sampler):
  whole, rows = sampler.batch(30), sampler.batch(30, slice(32, 64))
  np.testing.assert_array_equal(rows.block_indices, whole.block_indices[32:])
  np.testing.assert_array_equal(rows.queries.token_ids, whole.queries.token_ids[32:])
  np.testing.assert_array_equal(rows.blocks.token_ids, whole.blocks.token_ids[32:])


def sentences_of(store, block):
  token_ids, starts = store.token_ids(block), store.sentence_token_starts(block)
  ends = list(starts[1:]) + [len(token_ids)]
  return token_ids, list(zip(starts, ends))


def test_query_sentence_is_removed_or_kept(squad_block_store, sampler):
  batch = sampler.batch(3)
  query_room = sampler.query_length - 2
  for row, block in enumerate(batch.block_indices):
    query = batch.queries.token_ids[row][batch.queries.input_mask[row] == 1][1:-1]
    context = batch.blocks.token_ids[row][batch.blocks.segment_ids[row] == 1][:-1]
    full_text, spans = sentences_of(squad_block_store, block)
    # The query is one of the block's sentences (cut to the query length) ...
    matches = [(start, end) for start, end in spans
               if list(full_text[start:end][:query_room]) == list(query)]
    assert matches, f"query of row {row} is not a sentence of block {block}"
    if batch.removed[row]:
      # ... and, when removed, the block is its text with exactly that sentence cut out.
      assert any(list(context) == list(full_text[:start]) + list(full_text[end:])
                 for start, end in matches)
    else:
      np.testing.assert_array_equal(context, full_text)
    title = squad_block_store.title_token_ids(block)
    np.testing.assert_array_equal(batch.blocks.token_ids[row, 1:1 + len(title)], title)


def test_removal_rate_and_one_sentence_blocks(squad_block_store):
  counts = squad_block_store.sentence_counts()
  plan = ict.plan_epoch(np.arange(len(counts)), counts, seed=0, epoch=0, remove_prob=0.9)
  assert len(np.unique(plan.blocks)) == len(plan.blocks)  # each block at most once per epoch
  assert not (plan.removed & (counts[plan.blocks] == 1)).any()
  one_sentence = (counts == 1).sum()
  assert one_sentence > 50  # the SQuAD slice has such blocks, so the skip is exercised
  # Removal is drawn with p = 0.9 before skipping; among multi-sentence blocks it stays 0.9.
  multi = counts[plan.blocks] > 1
  rate = plan.removed[multi].mean()
  assert abs(rate - 0.9) < 4 * np.sqrt(0.09 / multi.sum())
  assert (plan.sentences < counts[plan.blocks]).all()


def test_candidate_blocks_restrict_the_sampler(squad_block_store):
  candidates = np.arange(0, len(squad_block_store), 2)
  sampler = ict.ICTSampler(squad_block_store, batch_size=32, candidate_blocks=candidates)
  for step in range(3):
    assert np.isin(sampler.batch(step).block_indices, candidates).all()


def test_too_few_examples_for_a_batch(squad_block_store):
  with pytest.raises(ValueError, match="fewer than one batch"):
    ict.ICTSampler(squad_block_store, batch_size=64, candidate_blocks=np.arange(10))

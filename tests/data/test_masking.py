"""Masking schemes: whole salient spans, random wordpieces, random whole-word spans; never more
than max_masks, never outside the query."""

import numpy as np
import pytest

from orqa_realm.data import masking


def test_apply_mask_replaces_exactly_the_positions():
  masked = masking.apply_mask(np.array([5, 6, 7, 8]), np.array([2, 0]), mask_id=103)
  np.testing.assert_array_equal(masked.token_ids, [103, 6, 103, 8])
  np.testing.assert_array_equal(masked.mask_positions, [0, 2])
  np.testing.assert_array_equal(masked.targets, [5, 7])


@pytest.mark.parametrize("bounds,span,max_length,expected", [
    ((0, 10), (3, 5), 20, (0, 10)),  # the whole sentence fits
    ((0, 100), (50, 54), 10, (47, 57)),  # centred on the span
    ((0, 100), (1, 3), 10, (0, 10)),  # clamped at the start
    ((10, 100), (97, 100), 10, (90, 100)),  # clamped at the end
])
def test_window_holds_the_span(bounds, span, max_length, expected):
  assert masking.window(*bounds, *span, max_length) == expected


def test_random_token_positions_count_and_bounds():
  rng = np.random.default_rng(0)
  for length in (1, 2, 7, 40, 94):
    for _ in range(20):
      positions = masking.random_token_positions(length, max_masks=10, rng=rng)
      assert len(positions) == min(max(1, round(0.15 * length)), 10)
      assert len(set(positions.tolist())) == len(positions)
      assert positions.min() >= 0 and positions.max() < length


def test_random_spans_are_whole_words_within_max_masks():
  rng = np.random.default_rng(0)
  # Words of 1, 3, 2, 12 (too long to mask whole), 1 and 4 wordpieces.
  lengths = [1, 3, 2, 12, 1, 4]
  is_word_start = np.concatenate([[True] + [False] * (n - 1) for n in lengths])
  starts = set(np.flatnonzero(is_word_start).tolist())
  seen_lengths = set()
  for _ in range(300):
    positions = masking.random_span_positions(is_word_start, max_masks=10, rng=rng)
    assert 1 <= len(positions) <= 10
    np.testing.assert_array_equal(positions, np.arange(positions[0], positions[-1] + 1))
    assert positions[0] in starts  # begins a word ...
    assert positions[-1] + 1 in starts | {len(is_word_start)}  # ... and ends one
    seen_lengths.add(len(positions))
  assert len(seen_lengths) > 3  # spans of several lengths, not one

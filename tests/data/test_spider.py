"""Spider's examples: the longest shared span on word boundaries with a content word, the query
window around it (span removed or kept), positives sharing the span and negatives of the same
document without it, batches a function of (seed, step)."""

import numpy as np
import pytest

from orqa_realm.data import spider
from orqa_realm.data.spider import SpiderSettings
from orqa_realm.data.tokenization import Tokenizer

SETTINGS = SpiderSettings(min_span=2, max_span=4, query_window=6, remove_prob=0.5)
WORDS = {1: "the", 2: "red", 3: "fox", 4: "##es", 5: "ran", 6: "of", 7: "a", 8: "dog", 9: "and"}


def boundaries(token_ids):
  return spider.span_boundaries([WORDS[int(i)] for i in token_ids])


def content(token_ids):
  return any(WORDS[int(i)] not in ("the", "of", "a", "and") for i in token_ids)


def test_longest_shared_span_keeps_to_words_and_content():
  first = np.array([7, 2, 3, 4, 5, 9, 1, 6, 1])  # a red fox ##es ran and the of the
  second = np.array([8, 2, 3, 4, 5, 1, 6, 1])  # dog red fox ##es ran the of the
  # "red fox ##es ran" (4) beats "the of the" (3, stopwords only, refused anyway).
  assert spider.longest_shared_span(first, second, SETTINGS, boundaries, content) == (1, 5)
  # Without "ran" the longest is "red fox ##es"; "fox ##es" alone would start inside no word,
  # but "red fox" would end inside one ("fox" continues as "##es").
  assert spider.longest_shared_span(first[:4], second, SETTINGS, boundaries, content) == (1, 4)
  # Only stopwords shared: no span.
  assert spider.longest_shared_span(np.array([1, 6, 1]), second, SETTINGS, boundaries,
                                    content) is None


def test_query_window_holds_or_drops_the_span():
  token_ids = np.arange(100, 120)
  rng = np.random.default_rng(0)
  for _ in range(50):
    kept = spider.query_window(token_ids, 8, 11, SETTINGS, False, rng)
    assert len(kept) == 6 and {108, 109, 110} <= set(kept.tolist())
    assert (np.diff(kept) == 1).all()
    dropped = spider.query_window(token_ids, 8, 11, SETTINGS, True, rng)
    assert len(dropped) == 3 and not {108, 109, 110} & set(dropped.tolist())


@pytest.fixture(scope="module")
def sampler(squad_block_store, minilm_dir):
  vocabulary = Tokenizer(minilm_dir).hf_tokenizer.convert_ids_to_tokens
  tokens = lambda token_ids: vocabulary([int(i) for i in token_ids])
  content_words = lambda token_ids: any(token.isalnum() and token not in ("the", "of", "a")
                                        for token in tokens(token_ids))
  return spider.SpiderSampler(
      squad_block_store, batch_size=16, settings=SpiderSettings(), tokens=tokens,
      is_content=content_words, groups=spider.title_groups(squad_block_store),
      query_length=64, block_length=128)


def test_examples_share_a_span_with_their_positive_and_not_their_negative(squad_block_store,
                                                                          sampler):
  groups = spider.title_groups(squad_block_store)
  with_negative = 0
  for position in range(40):
    example = sampler.example(position)
    source = int(sampler._order(0)[position])  # pylint: disable=protected-access
    assert groups[example.positive] == groups[source] and example.positive != source
    found = spider.longest_shared_span(squad_block_store.token_ids(source),
                                       squad_block_store.token_ids(example.positive),
                                       SpiderSettings(), sampler._boundaries,  # pylint: disable=protected-access
                                       sampler._is_content)  # pylint: disable=protected-access
    assert found is not None
    span = squad_block_store.token_ids(source)[found[0]:found[1]]
    assert spider.contains(squad_block_store.token_ids(example.positive), span)
    if example.negative >= 0:
      with_negative += 1
      assert groups[example.negative] == groups[source]
      assert not spider.contains(squad_block_store.token_ids(example.negative), span)
  assert with_negative >= 30  # SQuAD's articles have 21 or more paragraphs


def test_batches_are_a_function_of_seed_and_step(sampler):
  first, again = sampler.batch(3), sampler.batch(3)
  np.testing.assert_array_equal(first.block_ids, again.block_ids)
  np.testing.assert_array_equal(first.queries.token_ids, again.queries.token_ids)
  assert first.blocks.token_ids.shape == (32, 128)
  rows = sampler.batch(3, slice(8, 16))
  np.testing.assert_array_equal(rows.block_ids, first.block_ids[16:])
  np.testing.assert_array_equal(rows.queries.token_ids, first.queries.token_ids[8:])

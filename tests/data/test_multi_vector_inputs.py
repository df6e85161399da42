"""ColBERT-style inputs on real MiniLM wordpieces: the [Q] / [D] markers after [CLS], [MASK]
query augmentation (not attended to, every position a vector), punctuation out of a block's
vectors but still read."""

import numpy as np

from orqa_realm.data.multi_vector_inputs import (MarkerIds, block_input_lengths, block_inputs,
                                                 query_inputs)


def test_marker_ids_are_the_unused_tokens_mask_and_single_punctuation(tokenizer):
  ids = MarkerIds.of(tokenizer)
  vocab = tokenizer.hf_tokenizer.get_vocab()
  assert (ids.query_marker, ids.block_marker) == (vocab["[unused0]"], vocab["[unused1]"])
  assert ids.mask == vocab["[MASK]"]
  assert {vocab[","], vocab["."], vocab["("], vocab["?"]} <= set(ids.punctuation.tolist())
  assert vocab["the"] not in ids.punctuation and len(ids.punctuation) == 32


def test_augmented_query_is_marked_and_padded_with_mask(tokenizer):
  ids = MarkerIds.of(tokenizer)
  question = tokenizer.tokenize(["who wrote hamlet?"])
  inputs = query_inputs(tokenizer, question, ids, length=12, markers=True, augment=True)
  tokens = inputs.tokens
  assert tokenizer.hf_tokenizer.convert_ids_to_tokens(tokens.token_ids[0].tolist()) == [
      "[CLS]", "[unused0]", "who", "wrote", "hamlet", "?", "[SEP]"] + ["[MASK]"] * 5
  # BERT attends to the real tokens only; every position is a query vector.
  np.testing.assert_array_equal(tokens.input_mask[0], [1] * 7 + [0] * 5)
  np.testing.assert_array_equal(inputs.vector_mask[0], [1] * 12)
  np.testing.assert_array_equal(tokens.segment_ids[0], [0] * 12)
  plain = query_inputs(tokenizer, question, ids, length=12, markers=False, augment=False)
  assert plain.tokens.token_ids[0, 1] == question[0][0]
  np.testing.assert_array_equal(plain.vector_mask[0], [1] * 6 + [0] * 6)
  assert (plain.tokens.token_ids[0, 6:] == tokenizer.pad_id).all()


def test_long_query_is_cut_to_length_with_its_sep(tokenizer):
  ids = MarkerIds.of(tokenizer)
  question = tokenizer.tokenize(["one two three four five six seven eight nine ten"])
  tokens = query_inputs(tokenizer, question, ids, length=8, markers=True, augment=True).tokens
  assert tokens.token_ids.shape == (1, 8)
  assert tokens.token_ids[0, -1] == tokenizer.sep_id and tokens.input_mask[0].all()


def test_block_skips_punctuation_but_reads_it(squad_block_store, tokenizer):
  store = squad_block_store
  ids = MarkerIds.of(tokenizer)
  block = next(b for b in range(len(store)) if np.isin(store.token_ids(b), ids.punctuation).any())
  inputs = block_inputs(store, [block], ids, length=64, block_format="joined", markers=True,
                        skip_punctuation=True)
  tokens = inputs.tokens
  expected = np.concatenate([store.title_token_ids(block), store.token_ids(block)])[:61]
  np.testing.assert_array_equal(tokens.token_ids[0], [tokenizer.cls_id, ids.block_marker,
                                                      *expected, tokenizer.sep_id])
  assert tokens.input_mask[0].all()  # punctuation is read ...
  punctuation = np.isin(tokens.token_ids[0], ids.punctuation)
  assert punctuation.any()
  # ... but never a vector; every other real token is, [CLS], [D] and [SEP] included.
  np.testing.assert_array_equal(inputs.vector_mask[0], ~punctuation)
  kept = block_inputs(store, [block], ids, length=64, block_format="joined", markers=True,
                      skip_punctuation=False)
  np.testing.assert_array_equal(kept.vector_mask[0], tokens.input_mask[0])


def test_block_lengths_count_the_marker(squad_block_store):
  store = squad_block_store
  np.testing.assert_array_equal(block_input_lengths(store, "pair", True),
                                store.input_lengths("pair") + 1)
  np.testing.assert_array_equal(block_input_lengths(store, "joined", False),
                                store.input_lengths("joined"))

"""REALM examples on real SQuAD blocks: the masked span is a whole salient span inside its
sentence, masks never exceed max_masks nor reach padding, batches are a function of the step,
and the knowledge-augmented encoder's inputs put the masks at one place for every candidate."""

import numpy as np
import pytest

from orqa_realm.data.answer_spans import continuation_mask
from orqa_realm.data.realm import REALMExamples, knowledge_inputs
from orqa_realm.data.salient_spans import SalientSpans


@pytest.fixture(scope="module")
def continuation(tokenizer):
  return continuation_mask(tokenizer)


def make_examples(store, tokenizer, continuation, masking, **overrides):
  settings = dict(masking=masking, max_masks=10, query_length=24, mask_id=tokenizer.mask_id,
                  seed=0, continuation=continuation, spans=SalientSpans(store))
  settings.update(overrides)
  return REALMExamples(store, **settings)


def test_salient_queries_mask_one_whole_span_of_their_sentence(salient_squad_store, tokenizer,
                                                               continuation):
  store = salient_squad_store
  examples = make_examples(store, tokenizer, continuation, "salient")
  spans = SalientSpans(store)
  for step in range(12):
    for query in examples.batch(step, 8):
      masked = query.masked
      assert 1 <= len(masked.mask_positions) <= 10
      assert len(masked.token_ids) <= 22  # query_length - 2
      assert (masked.token_ids[masked.mask_positions] == tokenizer.mask_id).all()
      assert (np.delete(masked.token_ids, masked.mask_positions) != tokenizer.mask_id).all()
      # The targets are one salient span of the block, found in the block's wordpieces.
      block_ids = store.token_ids(query.block)
      matching = [span for span in spans.spans(query.block)
                  if span.token_end - span.token_start == len(masked.targets)
                  and np.array_equal(block_ids[span.token_start:span.token_end], masked.targets)]
      assert matching, tokenizer.decode(masked.targets)
      assert query.document == store.document_index(query.block)


def test_long_spans_are_never_chosen(salient_squad_store, tokenizer, continuation):
  examples = make_examples(salient_squad_store, tokenizer, continuation, "salient", max_masks=2)
  assert (examples.units.span_ends - examples.units.span_starts <= 2).all()
  assert (examples.units.span_starts >= examples.units.sentence_starts).all()
  assert (examples.units.span_ends <= examples.units.sentence_ends).all()


@pytest.mark.parametrize("masking", ["salient", "random_token", "random_span"])
def test_batches_are_a_function_of_the_step(salient_squad_store, tokenizer, continuation,
                                            masking):
  first = make_examples(salient_squad_store, tokenizer, continuation, masking)
  again = make_examples(salient_squad_store, tokenizer, continuation, masking)
  for step in (0, 3, 50):
    for a, b in zip(first.batch(step, 8), again.batch(step, 8)):
      assert a.block == b.block
      np.testing.assert_array_equal(a.masked.token_ids, b.masked.token_ids)
  assert [q.block for q in first.batch(0, 8)] != [q.block for q in first.batch(1, 8)]


@pytest.mark.parametrize("masking", ["salient", "random_token", "random_span"])
def test_knowledge_inputs_hold_the_masks_in_the_query_for_every_candidate(
    salient_squad_store, tokenizer, continuation, masking):
  store = salient_squad_store
  examples = make_examples(store, tokenizer, continuation, masking, max_masks=4)
  queries = examples.batch(2, 6)
  candidates = np.array([[-1, 3, 7], [-1, 0, 1], [-1, 9, 2], [-1, 5, 6], [-1, 8, 4],
                         [-1, 10, 11]])
  inputs = knowledge_inputs(store, queries, candidates, max_query_length=24,
                            max_document_length=40, max_masks=4)
  tokens = inputs.tokens
  assert tokens.token_ids.shape[:2] == (6, 3) and tokens.token_ids.shape[2] <= 64
  for row, query in enumerate(queries):
    count = len(query.masked.mask_positions)
    assert inputs.target_mask[row].sum() == count <= 4
    positions = inputs.mask_positions[row, :count]
    np.testing.assert_array_equal(inputs.targets[row, :count], query.masked.targets)
    for candidate in range(3):
      ids = tokens.token_ids[row, candidate]
      assert (ids[positions] == tokenizer.mask_id).all()
      # In the query segment, on real tokens (never padding, never the document).
      assert (tokens.segment_ids[row, candidate, positions] == 0).all()
      assert (tokens.input_mask[row, candidate, positions] == 1).all()
      assert positions.min() >= 1 and positions.max() <= len(query.masked.token_ids)
    # The null document has an empty body: [CLS] query [SEP] [SEP].
    assert tokens.input_mask[row, 0].sum() == len(query.masked.token_ids) + 3
    document = store.token_ids(int(candidates[row, 1]))[:39]
    start = len(query.masked.token_ids) + 2
    np.testing.assert_array_equal(tokens.token_ids[row, 1, start:start + len(document)], document)

"""Reader inputs: packing, block positions, and spans back to text, on real SQuAD text."""

import numpy as np

from orqa_realm.data import answer_spans
from orqa_realm.data.reader_inputs import pack_reader_inputs, reader_batch, span_text
from orqa_realm.modeling.reader import enumerate_spans, valid_spans


def test_block_positions_and_span_text(tokenizer):
  question = "When was the stadium rebuilt?"
  blocks = ["The stadium opened in the 1930s and was rebuilt in 1930 by the city.",
            "Short block."]
  (question_ids, _), = tokenizer.tokenize_with_offsets([question])
  encoded = tokenizer.tokenize_with_offsets(blocks)
  inputs = pack_reader_inputs([question_ids, question_ids[:3]], [ids for ids, _ in encoded],
                              max_length=20, max_question_length=4, cls_id=tokenizer.cls_id,
                              sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id)
  # Questions cut to 4 and 3 wordpieces: the blocks start after [CLS] q [SEP].
  assert inputs.block_offsets.tolist() == [6, 5]
  assert len(encoded[0][0]) > 20 - 6 - 1  # the first block is truncated to fit
  assert inputs.block_lengths.tolist() == [20 - 6 - 1, len(encoded[1][0])]
  for row in range(2):
    offset, length = inputs.block_offsets[row], inputs.block_lengths[row]
    np.testing.assert_array_equal(inputs.tokens.token_ids[row, offset:offset + length],
                                  encoded[row][0][:length])
    assert inputs.block_mask[row].sum() == length
    assert inputs.tokens.token_ids[row, offset + length] == tokenizer.sep_id

  # The answer span found in block coordinates, labelled in input coordinates, maps back.
  ids, offsets = encoded[0]
  found = answer_spans.text_answer_spans(blocks[0], np.asarray(ids), offsets, ["1930"],
                                         answer_spans.continuation_mask(tokenizer), 10)
  spans = enumerate_spans(20, 10)
  labels = answer_spans.span_labels(spans.starts, spans.ends, int(inputs.block_offsets[0]), found)
  assert labels.sum() == 1
  assert bool(valid_spans(inputs.block_mask, spans)[0][labels].all())
  (start, end), = zip(spans.starts[labels], spans.ends[labels])
  assert span_text(blocks[0], offsets, int(inputs.block_offsets[0]), start, end) == "1930"


def test_reader_batch_labels_answer_spans_of_real_blocks(squad_block_store, tokenizer):
  store = squad_block_store
  block = 0  # Super Bowl 50's first paragraph: "Denver Broncos" is in it
  other = next(b for b in range(len(store)) if "Denver Broncos" not in store.text(b))
  question = tokenizer.tokenize(["Which team won Super Bowl 50?"])[0]
  batch = reader_batch(store, [question], np.array([[block, other]]), max_length=320,
                       max_question_length=32, max_span_width=10,
                       continuation=answer_spans.continuation_mask(tokenizer),
                       answers=[(("Denver Broncos",), "text")])
  length = batch.inputs.token_ids.shape[-1]
  needed = len(question) + max(len(store.token_ids(block)), len(store.token_ids(other))) + 3
  assert length % 64 == 0 and needed <= length < needed + 64
  spans = enumerate_spans(length, 10)
  labelled = np.flatnonzero(batch.span_is_answer[0, 0])
  assert len(labelled) >= 1 and not batch.span_is_answer[0, 1].any()
  for span in labelled:
    text = span_text(store.text(block), store.token_char_spans(block),
                     int(batch.block_offsets[0, 0]), int(spans.starts[span]),
                     int(spans.ends[span]))
    assert text == "Denver Broncos"


def test_reader_batch_loses_answers_cut_off_by_truncation(squad_block_store, tokenizer):
  store = squad_block_store
  block = 0
  answer = "Arabic numerals 50"  # the end of the block: 157 wordpieces, not in the first 64
  assert store.text(block).count(answer) == 1 and len(store.token_ids(block)) == 157
  question = tokenizer.tokenize(["A question?"])[0]
  kwargs = dict(max_question_length=32, max_span_width=10,
                continuation=answer_spans.continuation_mask(tokenizer),
                answers=[((answer,), "text")])
  whole = reader_batch(store, [question], np.array([[block]]), max_length=512, **kwargs)
  cut = reader_batch(store, [question], np.array([[block]]), max_length=64, **kwargs)
  assert whole.span_is_answer.any() and not cut.span_is_answer.any()

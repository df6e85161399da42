"""Reader inputs: packing, block positions, and spans back to text, on real SQuAD text."""

import numpy as np

from orqa_realm.data import answer_spans
from orqa_realm.data.reader_inputs import pack_reader_inputs, span_text
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

"""The span reader: span enumeration, block boundaries, and the span head against NumPy."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.modeling import reader
from orqa_realm.modeling.bert import BertConfig

TINY = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=64)
CONFIG = reader.ReaderConfig(TINY, span_hidden_size=8, max_span_width=3)


def test_enumerate_spans_covers_every_span_up_to_the_width_once():
  spans = reader.enumerate_spans(5, 3)
  found = set(zip(spans.starts.tolist(), spans.ends.tolist()))
  expected = {(s, e) for s in range(5) for e in range(s, min(s + 3, 5))}
  assert found == expected and len(spans.starts) == len(expected)  # 5 + 4 + 3 = 12, no repeats


def reader_inputs():
  """Two inputs of 12 tokens: [CLS] q q [SEP] b b b b [SEP] pad..., the second with a longer
  question and a 2-token block."""
  token_ids = np.array([[2, 10, 11, 3, 20, 21, 22, 23, 3, 0, 0, 0],
                        [2, 10, 11, 12, 13, 3, 30, 31, 3, 0, 0, 0]], np.int32)
  segment_ids = np.array([[0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0],
                          [0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0]], np.int32)
  input_mask = (np.arange(12) < 9).astype(np.int32)[None].repeat(2, axis=0)
  block_mask = np.zeros((2, 12), bool)
  block_mask[0, 4:8] = True
  block_mask[1, 6:8] = True
  return TokenBatch(token_ids, segment_ids, input_mask), block_mask


def test_valid_spans_stay_inside_the_block():
  inputs, block_mask = reader_inputs()
  params = reader.SpanReader(CONFIG).init(jax.random.key(0), inputs, block_mask)["params"]
  output = reader.SpanReader(CONFIG).apply({"params": params}, inputs, block_mask)
  starts, ends = output.spans
  valid = np.asarray(output.valid)
  for row, (first, last) in enumerate([(4, 7), (6, 7)]):
    expected = (starts >= first) & (ends <= last)  # widths are <= 3 by construction
    np.testing.assert_array_equal(valid[row], expected)
  assert valid[0].sum() == 4 + 3 + 2  # widths 1, 2, 3 in a 4-token block
  assert valid[1].sum() == 2 + 1
  logits = np.asarray(output.logits)
  assert (logits[~valid] == reader.MASKED_SPAN_LOGIT).all()
  assert np.isfinite(logits[valid]).all() and (np.abs(logits[valid]) < 1e3).all()


def test_span_head_matches_numpy():
  rng = np.random.default_rng(0)
  hidden = rng.normal(size=(2, 7, TINY.hidden_size)).astype(np.float32)
  spans = reader.enumerate_spans(7, 3)
  head = reader.SpanHead(CONFIG)
  params = nn.unbox(head.init(jax.random.key(1), jnp.asarray(hidden), spans)["params"])
  found = np.asarray(head.apply({"params": params}, jnp.asarray(hidden), spans))

  p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  projected = hidden @ p["span_projection"]["kernel"] + p["span_projection"]["bias"]
  start_part, end_part = projected[..., :8], projected[..., 8:]
  expected = np.empty(found.shape)
  for b in range(2):
    for i, (s, e) in enumerate(zip(spans.starts, spans.ends)):
      x = np.maximum(start_part[b, s] + end_part[b, e], 0)
      x = (x - x.mean()) / np.sqrt(x.var() + TINY.layer_norm_eps)
      x = x * p["span_layer_norm"]["scale"] + p["span_layer_norm"]["bias"]
      expected[b, i] = x @ p["span_logit"]["kernel"][:, 0] + p["span_logit"]["bias"][0]
  np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-5)


def test_config_round_trip():
  assert reader.ReaderConfig.from_dict(CONFIG.to_dict()) == CONFIG

"""The cross-encoder: one score per pair from [CLS], whatever the padding and the batch's
layout; its head reads the pooler or the raw [CLS] state; settings round-trip."""

import jax
import numpy as np
import pytest

from orqa_realm.data.tokenization import TokenBatch, pack_inputs
from orqa_realm.modeling import cross_encoder, partitioning
from orqa_realm.modeling.bert import BertConfig, BertModel

TINY = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=64)
CONFIG = cross_encoder.CrossEncoderConfig(TINY, query_length=4, max_length=24)


def pairs(length: int) -> TokenBatch:
  """Three (query, passage) pairs packed to `length` tokens."""
  queries = [[10, 11], [12, 13, 14], [15]]
  passages = [[20, 21, 22, 23], [30, 31], [40, 41, 42, 43, 44, 45]]
  return pack_inputs(queries, passages, length, cls_id=2, sep_id=3, pad_id=0)


@pytest.mark.parametrize("pooling", ["pooled", "cls"])
def test_score_is_the_head_on_cls_whatever_the_padding_and_layout(pooling):
  config = cross_encoder.CrossEncoderConfig(TINY, pooling=pooling, query_length=4, max_length=24)
  params = partitioning.unbox(cross_encoder.init_params(config, jax.random.key(0)))
  model = cross_encoder.CrossEncoder(config)
  short, long = model.apply({"params": params}, pairs(16)), model.apply({"params": params},
                                                                        pairs(24))
  assert short.shape == (3,) and short.dtype == np.float32
  np.testing.assert_allclose(short, long, rtol=1e-5, atol=1e-6)  # padding changes nothing
  # Leading axes are kept: [queries, candidates, length] scores as [queries, candidates].
  grid = TokenBatch(*(np.stack([array, array[::-1]]) for array in pairs(16)))
  scored = model.apply({"params": params}, grid)
  np.testing.assert_allclose(scored, np.stack([short, short[::-1]]), rtol=1e-5, atol=1e-6)
  # The score is the linear head on BERT's pooler output (or the raw [CLS] state).
  inputs = pairs(16)
  output = BertModel(TINY).apply({"params": params["bert"]}, inputs.token_ids,
                                 inputs.segment_ids, inputs.input_mask)
  features = output.pooled_output if pooling == "pooled" else output.sequence_output[:, 0]
  head = params["score"]
  expected = np.asarray(features, np.float64) @ np.asarray(head["kernel"], np.float64)[:, 0]
  np.testing.assert_allclose(short, expected + float(head["bias"][0]), rtol=1e-5, atol=1e-6)


def test_pretrained_bert_params_are_taken_and_settings_round_trip():
  bert = partitioning.unbox(cross_encoder.init_params(CONFIG, jax.random.key(1)))["bert"]
  params = partitioning.unbox(cross_encoder.init_params(CONFIG, jax.random.key(2), bert))
  for taken, given in zip(jax.tree.leaves(params["bert"]), jax.tree.leaves(bert)):
    np.testing.assert_array_equal(taken, given)
  assert cross_encoder.CrossEncoderConfig.from_dict(CONFIG.to_dict()) == CONFIG
  with pytest.raises(ValueError, match="no room for a passage"):
    cross_encoder.CrossEncoderConfig(TINY, query_length=30, max_length=32)

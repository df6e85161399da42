"""The multi-vector retrievers on a tiny random BERT: each kind's vectors as its paper defines
them (ColBERT: every position, L2-normalised; ME-BERT: the first m; poly-encoder: m codes
attending over the block), its scores against NumPy formulas on those vectors, and the settings
round trip."""

import jax
import numpy as np
import pytest

from orqa_realm.core.errors import InputError

from orqa_realm.data.multi_vector_inputs import VectorInputs
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.modeling import multi_vector, partitioning
from orqa_realm.modeling.bert import BertConfig, BertModel
from orqa_realm.modeling.multi_vector import (ColBERTConfig, MEBERTConfig, MultiVectorEncoder,
                                              PolyEncoderConfig)

BERT = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=64)
CONFIGS = dict(
    colbert=ColBERTConfig(BERT, dim=16, query_length=8, block_length=24),
    me_bert=MEBERTConfig(BERT, dim=16, query_length=8, block_length=24, num_vectors=4),
    poly_encoder=PolyEncoderConfig(BERT, dim=16, query_length=8, block_length=24, num_vectors=4))


def random_inputs(rng, rows: int, length: int) -> VectorInputs:
  lengths = rng.integers(3, length + 1, size=rows)
  mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
  tokens = rng.integers(5, BERT.vocab_size, size=(rows, length)).astype(np.int32) * mask
  vector_mask = mask * (rng.random((rows, length)) > 0.2)  # some real tokens skipped
  return VectorInputs(TokenBatch(tokens, np.zeros_like(tokens), mask), vector_mask)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def encoded(request):
  config = CONFIGS[request.param]
  params = partitioning.unbox(multi_vector.init_params(config, jax.random.key(0)))
  rng = np.random.default_rng(0)
  queries, blocks = random_inputs(rng, 3, 8), random_inputs(rng, 5, 24)
  query_set, block_set = MultiVectorEncoder(config).apply({"params": params}, queries, blocks)
  hidden = lambda inputs: np.asarray(BertModel(BERT).apply(
      {"params": params["bert"]}, *inputs.tokens).sequence_output)
  return dict(config=config, params=params, queries=queries, blocks=blocks,
              query_set=query_set, block_set=block_set,
              query_hidden=hidden(queries), block_hidden=hidden(blocks))


def normalized(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_vectors_are_the_kinds_projection_of_bert(encoded):
  config, params = encoded["config"], encoded["params"]
  kernel = np.asarray(params["projection"]["kernel"])
  project = lambda h: normalized(h @ kernel) if config.normalize else h @ kernel
  query_vectors, block_vectors = np.asarray(encoded["query_set"].vectors), np.asarray(
      encoded["block_set"].vectors)
  queries, blocks = encoded["queries"], encoded["blocks"]
  hq, hb = encoded["query_hidden"], encoded["block_hidden"]
  if config.kind == "colbert":
    np.testing.assert_allclose(query_vectors, project(hq), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(encoded["query_set"].mask, queries.vector_mask)
    np.testing.assert_allclose(block_vectors, project(hb), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(encoded["block_set"].mask, blocks.vector_mask)
    return
  np.testing.assert_allclose(query_vectors, project(hq[:, :1]), rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(encoded["query_set"].mask, np.ones((3, 1)))
  if config.kind == "me_bert":
    np.testing.assert_allclose(block_vectors, project(hb[:, :4]), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(encoded["block_set"].mask, blocks.tokens.input_mask[:, :4])
    return
  codes = np.asarray(params["codes"])  # [m, hidden]
  logits = np.einsum("mh,blh->bml", codes, hb)
  logits = np.where(blocks.tokens.input_mask[:, None, :] != 0, logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  np.testing.assert_allclose(block_vectors, project(np.einsum("bml,blh->bmh", weights, hb)),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(encoded["block_set"].mask, np.ones((5, 4)))


def numpy_scores(kind, q, q_mask, b, b_mask):
  """[q] x [n] scores from the papers' formulas, loop by loop."""
  scores = np.zeros((len(q), len(b)))
  for i in range(len(q)):
    for j in range(len(b)):
      kept = b[j][b_mask[j] != 0]
      if not len(kept):  # a block with no vector scores 0
        continue
      if kind == "poly_encoder":
        logits = kept @ q[i, 0]
        weights = np.exp(logits - logits.max())
        weights /= weights.sum()
        scores[i, j] = q[i, 0] @ (weights @ kept)
      else:
        scores[i, j] = sum((kept @ q[i, t]).max() for t in range(q.shape[1]) if q_mask[i, t])
  return scores


def test_scores_equal_numpy(encoded):
  config = encoded["config"]
  query_set, block_set = encoded["query_set"], encoded["block_set"]
  expected = numpy_scores(config.kind, *(np.asarray(x) for x in (*query_set, *block_set)))
  np.testing.assert_allclose(multi_vector.scores(config, query_set, block_set), expected,
                             rtol=1e-4, atol=1e-5)
  # Each query against its own candidates: rows 0-1 for query 0 ... (3 queries, 2 each of 6).
  blocks6 = multi_vector.VectorSet(np.concatenate([block_set.vectors, block_set.vectors[:1]]),
                                   np.concatenate([block_set.mask, block_set.mask[:1]]))
  everything = numpy_scores(config.kind, *(np.asarray(x) for x in (*query_set, *blocks6)))
  paired = multi_vector.paired_scores(config, query_set, blocks6)
  np.testing.assert_allclose(paired, [everything[i, 2 * i:2 * i + 2] for i in range(3)],
                             rtol=1e-4, atol=1e-5)


def test_me_bert_block_shorter_than_its_vectors_has_no_vectors_past_it():
  config = MEBERTConfig(BERT, dim=16, query_length=8, block_length=24, num_vectors=6)
  params = partitioning.unbox(multi_vector.init_params(config, jax.random.key(0)))
  blocks = random_inputs(np.random.default_rng(1), 2, 4)  # a batch padded to 4 < 6
  block_set = MultiVectorEncoder(config).apply({"params": params}, blocks,
                                               method=MultiVectorEncoder.encode_blocks)
  assert block_set.vectors.shape == (2, 6, 16)
  np.testing.assert_array_equal(block_set.mask[:, 4:], 0)
  np.testing.assert_array_equal(block_set.mask[:, :4], blocks.tokens.input_mask)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_settings_round_trip_through_json(kind):
  config = CONFIGS[kind]
  restored = multi_vector.MultiVectorConfig.from_dict(config.to_dict())
  assert restored == config and type(restored) is type(config)


def test_settings_refuse_what_cannot_work():
  with pytest.raises(InputError, match="--block_vectors=30"):
    MEBERTConfig(BERT, block_length=24, num_vectors=30)
  with pytest.raises(InputError, match="--query_length=3 leaves no room"):
    ColBERTConfig(BERT, query_length=3)
  ColBERTConfig(BERT, query_length=4)  # [CLS] [Q] one wordpiece [SEP]
  with pytest.raises(ValueError, match="kind 'splade'"):
    multi_vector.MultiVectorConfig.from_dict(dict(CONFIGS["colbert"].to_dict(), kind="splade"))
  with pytest.raises(InputError, match="--poly_code_init_std=-0.1 must be >= 0"):
    PolyEncoderConfig(BERT, code_init_std=-0.1)


def test_poly_encoder_codes_start_at_their_initialisation_scale():
  """0 keeps BERT's initializer_range; a larger scale is what the codes are drawn at."""
  def code_std(config):
    params = partitioning.unbox(multi_vector.init_params(config, jax.random.key(0)))
    return float(np.std(params["codes"]))

  default = CONFIGS["poly_encoder"]
  wide = PolyEncoderConfig(BERT, dim=16, query_length=8, block_length=24, num_vectors=64,
                           code_init_std=0.25)
  assert abs(code_std(default) - BERT.initializer_range) < 0.3 * BERT.initializer_range
  assert abs(code_std(wide) - 0.25) < 0.05
  # A run recorded before the setting existed reads as the default.
  recorded = default.to_dict()
  del recorded["code_init_std"]
  assert multi_vector.MultiVectorConfig.from_dict(recorded) == default

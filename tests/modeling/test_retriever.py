"""The dual encoder: towers, sharing, pooling and initialisation from MiniLM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orqa_realm.modeling import retriever
from orqa_realm.modeling.bert import BertConfig, BertModel, mean_pool
from orqa_realm.modeling.hf_import import load_hf_bert

TINY = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=64)


def batch(length, seed=0):
  rng = np.random.default_rng(seed)
  token_ids = rng.integers(1, 100, size=(3, length)).astype(np.int32)
  input_mask = np.ones((3, length), np.int32)
  input_mask[1, length // 2:] = 0
  return retriever.TokenBatch(token_ids, np.zeros_like(token_ids), input_mask)


@pytest.mark.parametrize("share", [False, True])
def test_towers_and_embedding_shapes(share):
  config = retriever.RetrieverConfig(TINY, projection_size=8, share_encoders=share)
  params = retriever.init_params(config, jax.random.key(0))
  assert set(params) == set(retriever.tower_names(config))
  model = retriever.DualEncoder(config)
  queries, blocks = model.apply({"params": params}, batch(6), batch(12, seed=1))
  assert queries.shape == (3, 8) and blocks.shape == (3, 8)
  # LayerNorm output: zero mean and unit variance per embedding (scale 1, bias 0 at init).
  np.testing.assert_allclose(np.asarray(queries).mean(-1), 0, atol=1e-5)
  same_input = model.apply({"params": params}, batch(6), method=model.embed_blocks)
  query_again = model.apply({"params": params}, batch(6), method=model.embed_queries)
  # Shared towers embed a text the same way as query and as block; separate ones do not.
  assert np.allclose(same_input, query_again) == share


def test_mean_pooling_without_projection_is_bert_mean_pool(minilm_dir, tokenizer):
  minilm = load_hf_bert(minilm_dir)
  config = retriever.RetrieverConfig(minilm.config, projection_size=0, pooling="mean",
                                     share_encoders=True)
  params = retriever.init_params(config, jax.random.key(0), minilm.params)
  queries = tokenizer.encode_queries(["who won super bowl 50?", "where is warsaw?"], 16)
  embeddings = retriever.DualEncoder(config).apply(
      {"params": params}, queries, method=retriever.DualEncoder.embed_queries)
  output = BertModel(minilm.config).apply({"params": minilm.params}, *queries)
  np.testing.assert_allclose(embeddings, mean_pool(output.sequence_output, queries.input_mask),
                             atol=1e-6)


@pytest.mark.parametrize("projection_size", [0, 8])
def test_normalized_embeddings_are_unit_vectors_in_the_same_direction(projection_size):
  plain = retriever.RetrieverConfig(TINY, projection_size=projection_size)
  normalized = retriever.RetrieverConfig(TINY, projection_size=projection_size, normalize=True)
  params = retriever.init_params(plain, jax.random.key(0))
  raw = retriever.DualEncoder(plain).apply({"params": params}, batch(6), method="embed_blocks")
  unit = retriever.DualEncoder(normalized).apply({"params": params}, batch(6),
                                                  method="embed_blocks")
  np.testing.assert_allclose(np.linalg.norm(unit, axis=-1), 1.0, atol=1e-6)
  np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=-1, keepdims=True), atol=1e-6)
  assert retriever.RetrieverConfig.from_dict(normalized.to_dict()) == normalized


def test_init_from_mismatched_bert_is_refused(minilm_dir):
  minilm = load_hf_bert(minilm_dir)
  with pytest.raises(ValueError, match="do not fit"):
    retriever.init_params(retriever.RetrieverConfig(TINY), jax.random.key(0), minilm.params)


def test_dropout_on_embeddings_only_in_training():
  config = retriever.RetrieverConfig(TINY, projection_size=8)
  params = retriever.init_params(config, jax.random.key(0))
  model = retriever.DualEncoder(config)
  evaluation = model.apply({"params": params}, batch(6), method=model.embed_queries)
  training = model.apply({"params": params}, batch(6), False, method=model.embed_queries,
                         rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(evaluation, training)
  assert jnp.isfinite(training).all()

"""SPLADE's pooling and FLOPS regulariser against NumPy, and the term weights of the packaged
BERT-tiny SPLADE fine-tune against PyTorch's BertForMaskedLM on the same weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orqa_realm.data.pretrained import resolve_model_dir
from orqa_realm.data.tokenization import Tokenizer
from orqa_realm.encode import sparse as sparse_encode
from orqa_realm.modeling import mlm, splade

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def test_pool_against_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 7)).astype(np.float32) * 3
  mask = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
  pooled = np.asarray(splade.splade_pool(jnp.asarray(logits), jnp.asarray(mask)))
  expected = np.zeros((3, 7))
  for row in range(3):
    for position in np.flatnonzero(mask[row]):
      expected[row] = np.maximum(expected[row], np.log1p(np.maximum(logits[row, position], 0)))
  np.testing.assert_allclose(pooled, expected, rtol=1e-6)
  # Padding never contributes, however large its logits.
  logits[1, 1:] = 50.0
  np.testing.assert_allclose(splade.splade_pool(jnp.asarray(logits), jnp.asarray(mask))[1],
                             expected[1], rtol=1e-6)


def test_flops_against_numpy():
  weights = np.abs(np.random.default_rng(1).normal(size=(4, 9))).astype(np.float32)
  expected = sum(np.mean(weights[:, term]) ** 2 for term in range(9))
  np.testing.assert_allclose(splade.flops_regularizer(jnp.asarray(weights)), expected, rtol=1e-6)


def test_packaged_splade_weights_equal_pytorch():
  """bert_tiny_splade's term weights (our BERT, our head, our pooling) are PyTorch's."""
  directory = resolve_model_dir("bert_tiny_splade")
  model = sparse_encode.pretrained_model("bert_tiny_splade", splade.SpladeConfig())
  tokenizer = Tokenizer(directory)
  texts = ["who wrote the declaration of independence", "the seine flows through paris ."]
  inputs = tokenizer.pack(tokenizer.tokenize(texts), max_length=16)
  ours = np.asarray(jax.jit(lambda params, batch: splade.term_weights(
      mlm.KnowledgeAugmentedEncoder(model.config.encoder), params, batch))(model.params, inputs))
  reference = transformers.BertForMaskedLM.from_pretrained(directory).eval()
  with torch.no_grad():
    logits = reference(input_ids=torch.tensor(inputs.token_ids, dtype=torch.long),
                       token_type_ids=torch.tensor(inputs.segment_ids, dtype=torch.long),
                       attention_mask=torch.tensor(inputs.input_mask, dtype=torch.long)
                       ).logits.numpy()
  expected = (np.log1p(np.maximum(logits, 0)) * inputs.input_mask[..., None]).max(axis=1)
  np.testing.assert_allclose(ours, expected, atol=2e-4, rtol=1e-4)
  # Sparse, and expanding: weights on terms that are not in the text.
  for row in range(2):
    assert 0 < np.count_nonzero(ours[row]) < 0.05 * ours.shape[1]
    assert set(np.flatnonzero(ours[row])) - set(inputs.token_ids[row])

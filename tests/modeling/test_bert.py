"""The Flax BERT against PyTorch `transformers.BertModel` on the real MiniLM weights."""

import gzip
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from orqa_realm.modeling import bert
from orqa_realm.modeling.hf_import import load_hf_bert
from tests.conftest import DEMO_SQUAD

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def real_batch(tokenizer):
  """Real SQuAD paragraphs and questions of very different lengths, so most rows are padded."""
  squad = json.load(gzip.open(DEMO_SQUAD, "rt", encoding="utf-8"))
  texts = []
  for article in squad["data"][:6]:
    paragraph = article["paragraphs"][0]
    texts += [paragraph["context"], paragraph["qas"][0]["question"]]
  encoded = tokenizer.hf_tokenizer(texts, padding=True, truncation=True, max_length=192,
                                 return_tensors="np")
  batch = {name: encoded[name].astype(np.int32)
           for name in ("input_ids", "token_type_ids", "attention_mask")}
  assert (batch["attention_mask"] == 0).any(), "the batch must exercise padding"
  return batch


@pytest.fixture(scope="module")
def torch_outputs(minilm_dir, real_batch):
  """PyTorch's outputs in float32 and float64 (the latter as the exact reference)."""
  inputs = {name: torch.tensor(value, dtype=torch.long) for name, value in real_batch.items()}
  outputs = {}
  for dtype in (torch.float32, torch.float64):
    model = transformers.BertModel.from_pretrained(minilm_dir).to(dtype).eval()
    with torch.no_grad():
      result = model(**inputs)
    outputs[dtype] = (result.last_hidden_state.double().numpy(), result.pooler_output.double().numpy())
  return outputs


@pytest.fixture(scope="module")
def minilm(minilm_dir):
  return load_hf_bert(minilm_dir)


def run_flax(minilm, batch, dtype=jnp.float32, **model_kwargs):
  model = bert.BertModel(minilm.config, dtype=dtype, **model_kwargs)
  return model.apply({"params": minilm.params}, batch["input_ids"], batch["token_type_ids"],
                     batch["attention_mask"])


def masked_mean(hidden, mask):
  weights = mask[..., None].astype(np.float64)
  return (hidden * weights).sum(1) / weights.sum(1)


def cosine(a, b):
  return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_float32_matches_pytorch(minilm, real_batch, torch_outputs):
  """<= 1e-4 everywhere: real tokens against PyTorch float32, every position against float64.

  On padded positions PyTorch's own float32 result is ~1e-4 from its float64 result (the padded
  rows are ill-conditioned), so two float32 implementations can differ there by the sum of their
  rounding errors; the exact float64 result is the reference that separates the two.
  """
  output = run_flax(minilm, real_batch)
  hidden = np.asarray(output.sequence_output, np.float64)
  torch_hidden, torch_pooled = torch_outputs[torch.float32]
  exact_hidden, exact_pooled = torch_outputs[torch.float64]
  real = real_batch["attention_mask"].astype(bool)
  assert np.abs(hidden - torch_hidden)[real].max() <= 1e-4
  assert np.abs(hidden - exact_hidden).max() <= 1e-4  # padding included
  assert np.abs(np.asarray(output.pooled_output) - torch_pooled).max() <= 1e-4
  assert np.abs(np.asarray(output.pooled_output) - exact_pooled).max() <= 1e-4
  mask = real_batch["attention_mask"]
  assert cosine(masked_mean(hidden, mask), masked_mean(torch_hidden, mask)).min() >= 0.99999


def test_float32_is_as_accurate_as_pytorch_float32(minilm, real_batch, torch_outputs):
  """Against float64, our float32 error is within rounding noise of PyTorch's own float32 error."""
  exact, _ = torch_outputs[torch.float64]
  ours = np.abs(np.asarray(run_flax(minilm, real_batch).sequence_output, np.float64) - exact).max()
  theirs = np.abs(torch_outputs[torch.float32][0] - exact).max()
  assert ours <= 1.5 * theirs + 1e-6


def test_bfloat16_within_stated_tolerance(minilm, real_batch, torch_outputs):
  """bf16 matmuls with f32 accumulation: mean-pooled cosine >= 0.9999, relative error <= 1%."""
  output = run_flax(minilm, real_batch, dtype=jnp.bfloat16)
  hidden = np.asarray(output.sequence_output, np.float64)
  assert output.sequence_output.dtype == jnp.float32
  exact, _ = torch_outputs[torch.float64]
  mask = real_batch["attention_mask"].astype(bool)
  relative_error = np.linalg.norm(hidden[mask] - exact[mask]) / np.linalg.norm(exact[mask])
  assert relative_error <= 0.01
  pooled_cosine = cosine(masked_mean(hidden, mask), masked_mean(exact, mask))
  assert pooled_cosine.min() >= 0.9999


def test_remat_gives_same_outputs_and_gradients(minilm, real_batch):
  def loss(params, remat):
    model = bert.BertModel(minilm.config, remat=remat)
    output = model.apply({"params": params}, real_batch["input_ids"],
                         real_batch["token_type_ids"], real_batch["attention_mask"],
                         deterministic=False, rngs={"dropout": jax.random.key(0)})
    return (output.pooled_output ** 2).sum()

  plain_loss, plain_grads = jax.value_and_grad(loss)(minilm.params, False)
  remat_loss, remat_grads = jax.value_and_grad(loss)(minilm.params, True)
  np.testing.assert_allclose(remat_loss, plain_loss, rtol=1e-6)
  # Recomputation reorders float32 rounding, so differences are measured against the gradient's
  # global norm: per tensor, the attention key biases have an exactly-zero gradient (softmax is
  # invariant to q.b added to a whole row of logits) and hold only rounding noise.
  scale = optax.global_norm(plain_grads)
  for plain, remat in zip(jax.tree.leaves(plain_grads), jax.tree.leaves(remat_grads)):
    assert np.linalg.norm(remat - plain) <= 1e-5 * scale


def test_training_mode_applies_dropout(minilm, real_batch):
  def pooled(seed):
    return run_flax_training(minilm, real_batch, seed)

  first, again, other = pooled(0), pooled(0), pooled(1)
  np.testing.assert_array_equal(first, again)
  assert np.abs(first - other).max() > 1e-3
  assert np.abs(first - np.asarray(run_flax(minilm, real_batch).pooled_output)).max() > 1e-3


def run_flax_training(minilm, batch, seed):
  model = bert.BertModel(minilm.config)
  return np.asarray(model.apply(
      {"params": minilm.params}, batch["input_ids"], batch["token_type_ids"],
      batch["attention_mask"], deterministic=False,
      rngs={"dropout": jax.random.key(seed)}).pooled_output)


def test_attention_matches_jax_reference():
  """Our head-major attention against `jax.nn.dot_product_attention` (no dropout), with padding."""
  keys = jax.random.split(jax.random.key(0), 3)
  query, key, value = (jax.random.normal(k, (2, 7, 4, 8)) for k in keys)  # [batch, length, ...]
  mask = jnp.array([[True] * 7, [True] * 4 + [False] * 3])[:, None, None, :]
  head_major = lambda x: jnp.swapaxes(x, 1, 2)
  ours = bert.dot_product_attention(head_major(query), head_major(key), head_major(value), mask)
  reference = jax.nn.dot_product_attention(query, key, value, mask=mask)
  np.testing.assert_allclose(head_major(ours), reference, atol=1e-5)


def test_mean_pool_ignores_padding():
  hidden = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)
  mask = jnp.array([[1, 1, 0], [1, 0, 0]])
  np.testing.assert_allclose(bert.mean_pool(hidden, mask), [[1.0, 2.0], [6.0, 7.0]])


def test_sequence_longer_than_position_table_is_refused(minilm):
  ids = jnp.zeros((1, minilm.config.max_position_embeddings + 1), jnp.int32)
  with pytest.raises(ValueError, match="max_position_embeddings"):
    bert.BertModel(minilm.config).apply({"params": minilm.params}, ids, ids, ids)

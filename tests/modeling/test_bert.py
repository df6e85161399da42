"""The Flax BERT against PyTorch `transformers.BertModel` on the real MiniLM weights."""

import dataclasses
import functools
import gzip
import json
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from orqa_realm.modeling import bert
from orqa_realm.modeling.hf_import import load_hf_bert
from tests.conftest import DEMO_SQUAD, REPO_ROOT, subprocess_env

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


# A tiny random BERT for the layout and rematerialisation tests (parity with PyTorch on real
# weights is the tests above).
TINY = bert.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                       intermediate_size=64, max_position_embeddings=32)


@pytest.fixture(scope="module")
def tiny_batch():
  token_ids = jax.random.randint(jax.random.key(1), (3, 12), 0, TINY.vocab_size)
  input_mask = jnp.arange(12)[None, :] < jnp.array([[12], [7], [3]])  # padded rows
  return token_ids, jnp.zeros_like(token_ids), input_mask.astype(jnp.int32)


def tiny_loss(config, params, batch, remat="none", deterministic=True):
  """A scalar of every output, so that each parameter gets a gradient."""
  output = bert.BertModel(config, remat=remat).apply(
      {"params": params}, *batch, deterministic=deterministic, rngs={"dropout": jax.random.key(0)})
  return (output.sequence_output ** 2).mean() + (output.pooled_output ** 2).sum()


def test_scan_equals_the_loop(tiny_batch):
  """The scanned layers compute what the Python loop does, with the loop's parameters stacked:
  outputs and gradients alike (the loop's rematerialised, so that its remat is checked too)."""
  loop_config = dataclasses.replace(TINY, scan_layers=False)
  dummy = jnp.zeros((1, 4), jnp.int32)
  loop_params = nn.unbox(bert.initial_params(bert.BertModel(loop_config), jax.random.key(0),
                                             dummy, dummy, dummy))
  scan_params = bert.stack_layers(loop_params, TINY.num_hidden_layers)
  shapes = lambda tree: jax.tree.map(jnp.shape, tree)
  assert shapes(scan_params) == shapes(bert.parameter_shapes(TINY))
  assert scan_params["layers"]["attention"]["query"]["kernel"].shape == (3, 32, 32)

  loop_output = bert.BertModel(loop_config).apply({"params": loop_params}, *tiny_batch)
  scan_output = bert.BertModel(TINY).apply({"params": scan_params}, *tiny_batch)
  np.testing.assert_allclose(scan_output.sequence_output, loop_output.sequence_output, atol=1e-5)
  np.testing.assert_allclose(scan_output.pooled_output, loop_output.pooled_output, atol=1e-5)

  loop_grads = bert.stack_layers(jax.jit(jax.grad(functools.partial(
      tiny_loss, loop_config, remat="full")))(loop_params, tiny_batch), TINY.num_hidden_layers)
  scan_grads = jax.jit(jax.grad(functools.partial(tiny_loss, TINY)))(scan_params, tiny_batch)
  for loop_grad, scan_grad in zip(jax.tree.leaves(loop_grads), jax.tree.leaves(scan_grads)):
    np.testing.assert_allclose(scan_grad, loop_grad, atol=1e-5)
  unstacked = bert.unstack_layers(scan_params)
  assert jax.tree.structure(unstacked) == jax.tree.structure(loop_params)
  for back, original in zip(jax.tree.leaves(unstacked), jax.tree.leaves(loop_params)):
    np.testing.assert_array_equal(back, original)


@pytest.mark.slow  # over half a minute: CI runs it in its second step
def test_remat_policies_give_same_outputs_and_gradients(tiny_batch):
  """Each policy recomputes what it does not keep: same loss and gradients (dropout on, the
  same masks), up to float32 reordering."""
  config = TINY
  dummy = jnp.zeros((1, 4), jnp.int32)
  params = nn.unbox(bert.initial_params(bert.BertModel(config), jax.random.key(0), dummy, dummy,
                                        dummy))
  loss = functools.partial(tiny_loss, config, batch=tiny_batch, deterministic=False)
  plain_loss, plain_grads = jax.jit(jax.value_and_grad(loss))(params)
  scale = optax.global_norm(plain_grads)
  for policy in ("full", "minimal", "dots"):
    remat_loss, remat_grads = jax.jit(jax.value_and_grad(functools.partial(loss, remat=policy)))(
        params)
    np.testing.assert_allclose(remat_loss, plain_loss, rtol=1e-6)
    for plain, remat in zip(jax.tree.leaves(plain_grads), jax.tree.leaves(remat_grads)):
      assert np.linalg.norm(remat - plain) <= 1e-5 * scale
  with pytest.raises(ValueError, match="remat policy 'some'"):
    loss(params, remat="some")


def test_parameters_name_their_logical_axes():
  """Every BERT parameter is annotated, the scanned ones with a leading "layers" axis."""
  dummy = jnp.zeros((1, 4), jnp.int32)
  boxed = jax.eval_shape(lambda: bert.BertModel(TINY).init(jax.random.key(0), dummy, dummy,
                                                           dummy)["params"])
  boxes = jax.tree.leaves(boxed, is_leaf=lambda leaf: isinstance(leaf, nn.Partitioned))
  assert all(isinstance(box, nn.Partitioned) for box in boxes)
  assert all(len(box.names) == len(box.value.shape) for box in boxes)
  layers = boxed["layers"]
  assert layers["attention"]["query"]["kernel"].names == ("layers", "embed", "heads")
  assert layers["output"]["kernel"].names == ("layers", "mlp", "embed")
  assert boxed["embeddings"]["word_embeddings"]["embedding"].names == ("vocab", "embed")


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


@pytest.fixture
def one_sequence_per_step(monkeypatch):
  """Tiny configs' logits are far under a step's budget: one sequence per step, so the loop has
  several steps."""
  monkeypatch.setattr(bert, "_LOGITS_BYTES_PER_STEP", 1)


def test_rows_per_step_fill_the_budget_evenly_over_devices():
  logits = lambda heads, length: heads * length * length * 4
  assert bert.attention_rows_per_step(32, 12, 288, devices=1) == 1  # 4 MB a sequence
  assert bert.attention_rows_per_step(32, 12, 128, devices=1) == 2
  assert bert.attention_rows_per_step(32, 12, 32, devices=1) == 32  # the whole batch
  assert logits(12, 128) * 2 <= bert._LOGITS_BYTES_PER_STEP < logits(12, 128) * 3
  # Two sequences from each of 4 devices' shares of 8, one from each of 4's shares of 3.
  assert bert.attention_rows_per_step(32, 12, 128, devices=4) == 8
  assert bert.attention_rows_per_step(12, 12, 288, devices=4) == 4
  # A budget of 5 sequences (409,600 bytes each) in a batch of 12: 4, the largest divisor.
  assert bert.attention_rows_per_step(12, 1, 320, devices=1) == 4


def test_per_sequence_attention_equals_batched(one_sequence_per_step):
  """The loop over sequences computes what the batched formulation does, padding included."""
  keys = jax.random.split(jax.random.key(0), 3)
  query, key, value = (jax.random.normal(k, (3, 2, 7, 8)) for k in keys)  # [batch, heads, ...]
  mask = (jnp.arange(7) < jnp.array([[7], [4], [1]]))[:, None, None, :]
  np.testing.assert_allclose(bert.per_sequence_attention(query, key, value, mask),
                             bert.dot_product_attention(query, key, value, mask), atol=1e-6)


@pytest.mark.parametrize("attention", [bert.dot_product_attention, bert.per_sequence_attention])
def test_attention_dropout_drops_and_rescales_probabilities(attention, one_sequence_per_step):
  """With identity values the context is the probabilities themselves: about `rate` of them
  are zeroed and the rest are the softmax scaled by 1 / (1 - rate)."""
  batch, heads, length, rate = 4, 2, 16, 0.25
  query, key = (jax.random.normal(k, (batch, heads, length, length))
                for k in jax.random.split(jax.random.key(1), 2))
  value = jnp.broadcast_to(jnp.eye(length), (batch, heads, length, length))
  mask = jnp.ones((batch, 1, 1, length), bool)
  softmax = np.asarray(attention(query, key, value, mask))
  dropped = np.asarray(attention(query, key, value, mask, rate, jax.random.key(2)))
  kept = dropped != 0
  assert abs(1.0 - kept.mean() - rate) < 0.03  # 2,048 draws: 3 standard deviations is 0.029
  np.testing.assert_allclose(dropped[kept], softmax[kept] / (1.0 - rate), rtol=1e-5)


def test_attention_implementations_give_the_same_model(tiny_batch, one_sequence_per_step):
  """Outputs and gradients of the whole model, with each CPU implementation of attention (the
  loop's steps rematerialised in the backward pass)."""
  params = bert.initial_params(bert.BertModel(TINY), jax.random.key(0), *tiny_batch)
  params = nn.unbox(params)

  def loss(params, attention):
    output = bert.BertModel(TINY, attention=attention).apply({"params": params}, *tiny_batch)
    return (output.sequence_output ** 2).mean() + (output.pooled_output ** 2).sum()

  batched = jax.value_and_grad(loss)(params, "batched")
  per_sequence = jax.value_and_grad(loss)(params, "per_sequence")
  jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-6), per_sequence, batched)


def test_auto_attention_loops_on_cpu_where_a_sequence_fills_the_budget():
  assert bert.attention_function("auto", 12, 288) is bert.per_sequence_attention  # 4 MB
  assert bert.attention_function("auto", 12, 128) is bert.dot_product_attention  # 0.8 MB
  assert bert.attention_function("batched", 12, 288) is bert.dot_product_attention


def test_unknown_attention_implementation_is_refused(tiny_batch):
  with pytest.raises(ValueError, match="attention implementation 'flash'"):
    bert.BertModel(TINY, attention="flash").init(jax.random.key(0), *tiny_batch)


def test_cudnn_attention_refuses_dropout():
  x = jnp.zeros((1, 1, 2, 8))
  with pytest.raises(ValueError, match="no attention dropout"):
    bert.cudnn_attention(x, x, x, jnp.ones((1, 1, 1, 2), bool), 0.1, jax.random.key(0))


def test_per_sequence_attention_needs_no_collective_on_a_split_batch():
  """On 4 devices with the batch split over them, the loop runs over each device's own rows
  (one sequence of each per step): the compiled model has no collective, and its outputs equal
  one device's."""
  result = subprocess.run(
      [sys.executable, "-m", "tests.modeling.attention_sharding_check"], cwd=REPO_ROOT,
      capture_output=True, text=True, timeout=300,
      env=subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"))
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["devices"] == 4
  assert report["collectives"] == []
  assert report["max_difference"] <= 1e-5


def test_bfloat16_dense_backward_multiplies_the_bfloat16_cotangent():
  """A bfloat16 dense product's gradients are those of the cotangent rounded to bfloat16 (as
  PyTorch's autocast), computed exactly and rounded to bfloat16; the forward is exact in float32."""
  rng = np.random.default_rng(0)
  inputs, kernel = (jnp.asarray(rng.normal(size=shape), jnp.bfloat16) for shape in [(2, 3, 8), (8, 4)])
  cotangent = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)
  output, pullback = jax.vjp(bert.bfloat16_dense, inputs, kernel)
  d_inputs, d_kernel = pullback(cotangent)
  x, w = np.asarray(inputs, np.float64), np.asarray(kernel, np.float64)
  g = np.asarray(cotangent.astype(jnp.bfloat16), np.float64)
  np.testing.assert_allclose(output, x @ w, rtol=1e-6)
  assert d_inputs.dtype == d_kernel.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(d_inputs, np.float64), g @ w.T, rtol=2 ** -8, atol=1e-6)
  np.testing.assert_allclose(np.asarray(d_kernel, np.float64),
                             x.reshape(-1, 8).T @ g.reshape(-1, 4), rtol=2 ** -8, atol=1e-6)


def test_bfloat16_model_gradients_near_float32(tiny_batch):
  """The whole model's gradients in bfloat16 (bfloat16 products forward and backward) within
  bfloat16's precision of the float32 gradients, parameter by parameter."""
  params = nn.unbox(bert.initial_params(bert.BertModel(TINY), jax.random.key(0), *tiny_batch))

  def gradients(dtype):
    def loss(params):
      output = bert.BertModel(TINY, dtype=dtype).apply({"params": params}, *tiny_batch)
      return (output.sequence_output ** 2).mean() + (output.pooled_output ** 2).sum()
    return jax.grad(loss)(params)

  errors = jax.tree.map(lambda ours, exact: float(jnp.linalg.norm(ours - exact)
                                                 / jnp.linalg.norm(exact)),
                        gradients(jnp.bfloat16), gradients(jnp.float32))
  # The key bias's exact gradient is zero (a softmax ignores a shift of all of a query's
  # logits): what either dtype gives there is rounding noise.
  del errors["layers"]["attention"]["key"]["bias"]
  assert max(jax.tree.leaves(errors)) < 0.02, errors


@pytest.mark.parametrize("rows", [256, 100])
def test_transposed_in_memory_is_the_transpose(rows):
  matrix = jnp.arange(rows * 3, dtype=jnp.float32).reshape(rows, 3)
  np.testing.assert_array_equal(bert.transposed_in_memory(matrix), matrix.T)


def test_bfloat16_dense_backward_stays_in_bfloat16():
  """No operand of the compiled backward pass is converted to float32 for a float32 product
  (XLA's CPU fallback for products it has no bfloat16 kernel for)."""
  inputs, kernel = jnp.ones((256, 64), jnp.bfloat16), jnp.ones((64, 96), jnp.bfloat16)
  gradients = jax.jit(jax.grad(lambda x, w: bert.bfloat16_dense(x, w).sum(), argnums=(0, 1)))
  compiled = gradients.lower(inputs, kernel).compile().as_text()
  upcast = re.findall(r"= f32\[(?:256,64|64,256|256,96|96,256|64,96|96,64)\]\S* convert\(",
                      compiled)
  assert not upcast, upcast


def test_dense_layers_use_the_bfloat16_product_only_for_bfloat16_operands():
  calls = lambda dtype: str(jax.make_jaxpr(lambda x, w: bert.dot_general_f32_accumulation(
      x, w, (((2,), (0,)), ((), ()))))(jnp.ones((2, 3, 8), dtype), jnp.ones((8, 4), dtype)))
  assert "custom_vjp_call" in calls(jnp.bfloat16)
  assert "custom_vjp_call" not in calls(jnp.float32)


def test_mean_pool_ignores_padding():
  hidden = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)
  mask = jnp.array([[1, 1, 0], [1, 0, 0]])
  np.testing.assert_allclose(bert.mean_pool(hidden, mask), [[1.0, 2.0], [6.0, 7.0]])


def test_sequence_longer_than_position_table_is_refused(minilm):
  ids = jnp.zeros((1, minilm.config.max_position_embeddings + 1), jnp.int32)
  with pytest.raises(ValueError, match="max_position_embeddings"):
    bert.BertModel(minilm.config).apply({"params": minilm.params}, ids, ids, ids)


def test_every_bert_backed_config_is_saved_with_its_bert_and_read_back():
  """A model config is saved (`to_dict`) only once its BERT is known, refused naming its class
  before, and `from_dict` reads back what JSON kept; a bad --block_format names the field."""
  from orqa_realm.core.errors import InputError
  from orqa_realm.modeling.cross_encoder import CrossEncoderConfig
  from orqa_realm.modeling.deepct import DeepCTConfig
  from orqa_realm.modeling.multi_vector import ColBERTConfig, MultiVectorConfig
  from orqa_realm.modeling.reader import ReaderConfig
  from orqa_realm.modeling.retriever import RetrieverConfig
  from orqa_realm.modeling.splade import SpladeConfig

  tiny = bert.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64)
  for config in (RetrieverConfig(), CrossEncoderConfig(), ReaderConfig(), DeepCTConfig(),
                 SpladeConfig(), ColBERTConfig()):
    with pytest.raises(ValueError, match=f"a {type(config).__name__} without its BERT"):
      config.to_dict()
    saved = json.loads(json.dumps(config.with_bert(tiny).to_dict()))
    read = (MultiVectorConfig if isinstance(config, MultiVectorConfig) else type(config))
    assert read.from_dict(saved) == config.with_bert(tiny)
  for config_class in (RetrieverConfig, DeepCTConfig, SpladeConfig, ColBERTConfig):
    with pytest.raises(InputError, match="field 'block_format'.*'sentence'"):
      config_class(block_format="sentence")

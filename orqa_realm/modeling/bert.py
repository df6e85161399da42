"""BERT as pure Flax linen modules, numerically matching Hugging Face's `BertModel`.

Mixed precision: `dtype` is the compute dtype of matrix multiplications. With bfloat16, inputs and
kernels are cast to bfloat16 and products accumulate in float32 (`preferred_element_type`), which
both keeps accuracy and runs fastest on CPUs with AVX-512 BF16 and on accelerators. The residual
stream, LayerNorm and softmax stay in float32; parameters are always float32.

Layers run under `nn.scan` (`BertConfig.scan_layers`, the default): one layer is compiled
whatever the depth, and the parameters of all layers are stacked on a leading `layers` axis,
`layers/attention/query/kernel` [layers, hidden, hidden]. Without it a Python loop builds
`layer_0/...`, `layer_1/...`, the layout Hugging Face checkpoints map onto (`hf_import.py`);
`stack_layers` and `unstack_layers` convert between the two. Either way each layer may be
rematerialised in the backward pass by one of `REMAT_POLICIES`.

Every parameter names its axes (`partitioning`), so that `param_shardings` can split it over
the mesh's "fsdp" axis.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, Self

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from orqa_realm.modeling import partitioning
from orqa_realm.modeling.partitioning import EMBED, HEADS, LAYERS, MLP, VOCAB, logical

ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
}

# What each layer keeps for the backward pass; the rest is recomputed there. "none" keeps
# everything (fastest, most memory), "full" only the layer's input, "minimal" also the results
# of matmuls with weights (recomputing attention and elementwise work, MaxText's "minimal"), and
# "dots" every matmul's result, attention's included.
RematPolicy = Literal["none", "full", "minimal", "dots"]
REMAT_POLICIES: dict[RematPolicy, Callable[..., bool] | None] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """The architecture of a BERT encoder (the fields of a Hugging Face config.json we use)."""
  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  initializer_range: float = 0.02
  layer_norm_eps: float = 1e-12
  # Ours, not Hugging Face's: layers under nn.scan, their parameters stacked (see the module's
  # docstring). It fixes the layout of the parameters, so runs record it with the architecture.
  scan_layers: bool = True

  def __post_init__(self):
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                       f"num_attention_heads {self.num_attention_heads}")
    if self.hidden_act not in ACTIVATIONS:
      raise ValueError(f"hidden_act {self.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> BertConfig:
    """Builds a config from a dict, ignoring keys that are not architecture fields."""
    names = {field.name for field in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in values.items() if key in names})

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


class BertBacked:
  """What a model's config shares when a BERT is its encoder: a frozen dataclass whose `bert`
  field is None in a task's settings, filled in from --bert's config.json when the task starts
  (`with_bert`), and saved with the run as JSON (`to_dict`, read back by `from_dict`)."""
  bert: BertConfig | None

  def with_bert(self, bert: BertConfig) -> Self:
    return dataclasses.replace(self, bert=bert)

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready, as saved with a run (and an index version)."""
    if self.bert is None:
      raise ValueError(f"a {type(self).__name__} without its BERT architecture cannot be saved")
    return dict(dataclasses.asdict(self), bert=self.bert.to_dict())

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> Self:
    """The inverse of `to_dict`."""
    return cls(**dict(values, bert=BertConfig.from_dict(values["bert"])))


class BertOutput(NamedTuple):
  sequence_output: jax.Array  # [batch, length, hidden] float32
  pooled_output: jax.Array  # [batch, hidden] float32, tanh(dense([CLS]))


def dot_general_f32_accumulation(lhs, rhs, dimension_numbers, precision=None,
                                  preferred_element_type=None):
  """`lax.dot_general` that always accumulates (and returns) float32; a dense layer's product of
  bfloat16 operands also multiplies in bfloat16 in the backward pass (`bfloat16_dense`)."""
  del preferred_element_type  # Always float32: that is the point of this function.
  dense_product = (((lhs.ndim - 1,), (0,)), ((), ()))
  if (lhs.dtype == rhs.dtype == jnp.bfloat16 and rhs.ndim == 2
      and tuple(tuple(map(tuple, pair)) for pair in dimension_numbers) == dense_product):
    return bfloat16_dense(lhs, rhs)
  return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                             preferred_element_type=jnp.float32)


@jax.custom_vjp
def bfloat16_dense(inputs: jax.Array, kernel: jax.Array) -> jax.Array:
  """inputs [..., in] bfloat16 x kernel [in, out] bfloat16 -> [..., out] float32, accumulated in
  float32, whose backward pass takes the cotangent in bfloat16, as PyTorch's autocast does.

  Differentiated as is, the float32 output gives a float32 cotangent, and XLA's CPU backend runs
  a float32 x bfloat16 product as a float32 one: the backward pass of a bfloat16 model ran at
  float32 speed (ICT bf16 training step 2.25 s against 1.74 s with this; see README
  "Benchmarks").
  """
  return jax.lax.dot_general(inputs, kernel, (((inputs.ndim - 1,), (0,)), ((), ())),
                             preferred_element_type=jnp.float32)


def _bfloat16_dense_forward(inputs, kernel):
  return bfloat16_dense(inputs, kernel), (inputs, kernel)


def _bfloat16_dense_backward(residuals, cotangent):
  inputs, kernel = residuals
  cotangent = cotangent.astype(jnp.bfloat16)  # [..., out]
  d_inputs = jax.lax.dot_general(cotangent, kernel, (((cotangent.ndim - 1,), (1,)), ((), ())),
                                 preferred_element_type=jnp.float32)  # [..., in]
  tokens = inputs.reshape(-1, inputs.shape[-1])  # [tokens, in]
  d_kernel = jnp.dot(transposed_in_memory(tokens), cotangent.reshape(-1, cotangent.shape[-1]),
                     preferred_element_type=jnp.float32)  # [in, out]
  return d_inputs.astype(jnp.bfloat16), d_kernel.astype(jnp.bfloat16)


bfloat16_dense.defvjp(_bfloat16_dense_forward, _bfloat16_dense_backward)


def transposed_in_memory(matrix: jax.Array, block: int = 64) -> jax.Array:
  """matrix.T [columns, rows], written out as such rather than folded into the consumer.

  XLA folds a plain transpose into the dot that reads it, and its CPU backend runs a bfloat16
  dot contracting the first axis of its left operand in float32 (converting both operands):
  the kernel gradient xᵀg ran at 323 GFLOP/s. Transposed through a 3-D view it is copied, and
  the dot runs on the bfloat16 kernel: 754 GFLOP/s (4096 x 384 by 4096 x 1536, README
  "Benchmarks").
  """
  rows, columns = matrix.shape
  if rows % block:
    return matrix.T
  return jnp.transpose(matrix.reshape(rows // block, block, columns), (2, 0, 1)).reshape(
      columns, rows)


def dense(features: int, config: BertConfig, dtype, name: str,
          axes: tuple[str, str | None] = (EMBED, MLP)) -> nn.Dense:
  """A Dense layer with BERT's initialisation, `dtype` inputs and float32 accumulation; `axes`:
  the logical names of its input and output features."""
  return nn.Dense(features, dtype=dtype, dot_general=dot_general_f32_accumulation,
                  kernel_init=logical(nn.initializers.normal(config.initializer_range), *axes),
                  bias_init=logical(nn.initializers.zeros_init(), axes[1]), name=name)


def layer_norm(config: BertConfig, name: str, axis: str = EMBED) -> nn.LayerNorm:
  """LayerNorm computed in float32 whatever the compute dtype; `axis`: the logical name of the
  features it normalises."""
  # Two-pass variance, as PyTorch: E[x^2] - E[x]^2 loses precision when the mean is large.
  return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=jnp.float32, use_fast_variance=False,
                      scale_init=logical(nn.initializers.ones_init(), axis),
                      bias_init=logical(nn.initializers.zeros_init(), axis), name=name)


# How attention's core runs over a batch. "batched": both matmuls and the softmax over the whole
# batch at once, the formulation XLA fuses well on GPU/TPU. "per_sequence": a loop over the batch
# a few sequences at a time, so that their [heads, length, length] logits stay in cache between
# the two matmuls and the softmax: on CPU the batched logits of 32 x 288 tokens (127 MB per layer)
# go through memory three times, and the loop ran the attention core 6x faster (see README
# "Benchmarks"). "cudnn": `jax.nn.dot_product_attention`'s cuDNN flash attention (NVIDIA GPUs,
# bfloat16/float16, no attention dropout). "auto": on CPU per_sequence where one sequence's logits
# fill a step's budget (`_LOGITS_BYTES_PER_STEP`: from 210 tokens with 12 heads), else batched;
# at 128 tokens neither won everywhere (embedding: per_sequence 13% faster in float32, 17% slower
# in bfloat16).
AttentionImplementation = Literal["auto", "batched", "per_sequence", "cudnn"]
ATTENTION_IMPLEMENTATIONS = ("auto", "batched", "per_sequence", "cudnn")


def dot_product_attention(query, key, value, mask, dropout_rate: float = 0.0,
                          dropout_rng: jax.Array | None = None) -> jax.Array:
  """Softmax attention in head-major layout, with dropout on the probabilities while training.

  Batch and heads lead, so both products are plain batched matmuls with no transposes between
  them; on CPU this ran 2.6x faster than `jax.nn.dot_product_attention` (whose default is the
  same math in [batch, length, heads, head_dim] layout), which stays the reference in the tests.

  Args:
    query, key, value: [batch, heads, length, head_dim].
    mask: [batch, 1, 1, length] bool, True where a key may be attended to.
    dropout_rate: the probability of dropping an attention probability (training).
    dropout_rng: the key of the dropout mask; None for no dropout.
  Returns:
    [batch, heads, length, head_dim] float32.
  """
  scale = 1.0 / np.sqrt(query.shape[-1])
  logits = jnp.einsum("bnth,bnsh->bnts", query, key,
                      preferred_element_type=jnp.float32) * scale  # [batch, heads, length, length]
  logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  probabilities = jax.nn.softmax(logits, axis=-1)
  if dropout_rng is not None and dropout_rate > 0.0:
    # As nn.Dropout: kept probabilities scaled by 1 / (1 - rate).
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probabilities.shape)
    probabilities = jnp.where(keep, probabilities / (1.0 - dropout_rate), 0.0)
  return jnp.einsum("bnts,bnsh->bnth", probabilities.astype(value.dtype), value,
                    preferred_element_type=jnp.float32)


# The float32 logits one step of `per_sequence_attention` holds: about the L2 cache of the
# 2-core machines this was measured on. Per step, one sequence at 288 tokens (12 heads: 4 MB),
# two at 128, all of a batch of 32-token queries. (ICT bf16 training step, 32 x 128: 1 sequence
# per step 2.55 s, 2: 2.06, 4: 2.13, 8: 2.26, the whole batch 2.25.)
_LOGITS_BYTES_PER_STEP = 2 << 20


def attention_rows_per_step(batch: int, heads: int, length: int, devices: int) -> int:
  """How many rows of the batch each step of `per_sequence_attention` takes: as many sequences
  per device as keep the step's logits within `_LOGITS_BYTES_PER_STEP` (at least one), for each
  device when the device count divides the batch, and a divisor of the batch."""
  per_device = max(1, _LOGITS_BYTES_PER_STEP // (heads * length * length * 4))
  shares = np.gcd(batch, devices)  # rows per step that can come one from each device's share
  rows_per_share = batch // shares
  return shares * max(k for k in range(1, min(per_device, rows_per_share) + 1)
                      if rows_per_share % k == 0)


def per_sequence_attention(query, key, value, mask, dropout_rate: float = 0.0,
                           dropout_rng: jax.Array | None = None) -> jax.Array:
  """`dot_product_attention` looped over the batch a few sequences at a time (same arguments and
  result), so that each step's logits fit in cache, in the forward and the backward pass.

  When the batch is split over all devices (as the training loop and the embedding pipeline
  split it), each step takes the same number of rows from every device's share: the loop runs
  over each device's own rows, with no collective. Each step is rematerialised in the backward
  pass, where it recomputes its probabilities (flash attention's trade): saving them for every
  step made the training step slower than the batched formulation.
  """
  batch, heads, length, _ = query.shape
  rows = attention_rows_per_step(batch, heads, length, jax.device_count())
  steps = batch // rows

  def steps_first(x):  # [batch, ...] -> [steps, rows, ...]: row i * steps + j at [j, i]
    return jnp.swapaxes(x.reshape(rows, steps, *x.shape[1:]), 0, 1)

  def step(inputs):
    *arrays, rng = inputs
    return dot_product_attention(*arrays, dropout_rate, rng)

  rngs = None if dropout_rng is None else jax.random.split(dropout_rng, steps)
  context = jax.lax.map(jax.checkpoint(step),
                        (*map(steps_first, (query, key, value, mask)), rngs))
  return jnp.swapaxes(context, 0, 1).reshape(query.shape)  # [batch, heads, length, head_dim]


def cudnn_attention(query, key, value, mask, dropout_rate: float = 0.0,
                    dropout_rng: jax.Array | None = None) -> jax.Array:
  """`dot_product_attention` (same arguments and result) by cuDNN's fused flash attention."""
  if dropout_rng is not None and dropout_rate > 0.0:
    raise ValueError("attention 'cudnn' has no attention dropout: train with "
                     "attention_probs_dropout_prob 0, or use attention 'batched'")
  token_major = lambda x: jnp.swapaxes(x, 1, 2)  # [batch, length, heads, head_dim]
  context = jax.nn.dot_product_attention(token_major(query), token_major(key), token_major(value),
                                         mask=mask, implementation="cudnn")
  return token_major(context).astype(jnp.float32)


def attention_function(implementation: AttentionImplementation, heads: int,
                       length: int) -> Callable[..., jax.Array]:
  """The function computing attention's core for `implementation` (see
  `AttentionImplementation`), "auto" resolved for the default backend, `heads` and `length`."""
  if implementation not in ATTENTION_IMPLEMENTATIONS:
    raise ValueError(f"attention implementation {implementation!r} is not one of "
                     f"{list(ATTENTION_IMPLEMENTATIONS)}")
  if implementation == "auto":
    long = heads * length * length * 4 >= _LOGITS_BYTES_PER_STEP
    implementation = "per_sequence" if jax.default_backend() == "cpu" and long else "batched"
  return {"batched": dot_product_attention, "per_sequence": per_sequence_attention,
          "cudnn": cudnn_attention}[implementation]


class BertEmbeddings(nn.Module):
  """Word + position + segment embeddings, LayerNorm, dropout."""
  config: BertConfig

  @nn.compact
  def __call__(self, token_ids, segment_ids, deterministic: bool):
    config = self.config
    length = token_ids.shape[-1]
    if length > config.max_position_embeddings:
      raise ValueError(f"sequence length {length} exceeds max_position_embeddings "
                       f"{config.max_position_embeddings}")
    init = logical(nn.initializers.normal(config.initializer_range), VOCAB, EMBED)
    words = nn.Embed(config.vocab_size, config.hidden_size, embedding_init=init,
                     name="word_embeddings")(token_ids)  # [batch, length, hidden]
    positions = nn.Embed(config.max_position_embeddings, config.hidden_size, embedding_init=init,
                         name="position_embeddings")(jnp.arange(length))  # [length, hidden]
    segments = nn.Embed(config.type_vocab_size, config.hidden_size, embedding_init=init,
                        name="token_type_embeddings")(segment_ids)  # [batch, length, hidden]
    hidden = layer_norm(config, "layer_norm")(words + positions + segments)
    return nn.Dropout(config.hidden_dropout_prob)(hidden, deterministic=deterministic)


class BertSelfAttention(nn.Module):
  """Multi-head self-attention and its output projection."""
  config: BertConfig
  dtype: Any = jnp.float32
  attention: AttentionImplementation = "auto"

  @nn.compact
  def __call__(self, hidden, attention_mask, deterministic: bool):
    config = self.config
    heads = config.num_attention_heads
    head_dim = config.hidden_size // heads

    def project(name):  # [batch, length, hidden] -> [batch, heads, length, head_dim]
      projected = dense(config.hidden_size, config, self.dtype, name, (EMBED, HEADS))(hidden)
      projected = projected.reshape(*projected.shape[:-1], heads, head_dim)
      return jnp.swapaxes(projected, -3, -2).astype(self.dtype)

    rate = config.attention_probs_dropout_prob
    dropout_rng = None if deterministic or rate == 0.0 else self.make_rng("dropout")
    context = attention_function(self.attention, heads, hidden.shape[-2])(
        project("query"), project("key"), project("value"), attention_mask, rate, dropout_rng)
    context = jnp.swapaxes(context, -3, -2)  # [batch, length, heads, head_dim]
    context = context.reshape(*context.shape[:-2], config.hidden_size)  # [batch, length, hidden]
    return dense(config.hidden_size, config, self.dtype, "output", (HEADS, EMBED))(context)


class BertLayer(nn.Module):
  """One post-LayerNorm transformer layer."""
  config: BertConfig
  dtype: Any = jnp.float32
  attention: AttentionImplementation = "auto"

  @nn.compact
  def __call__(self, hidden, attention_mask, deterministic: bool):
    config = self.config
    dropout = nn.Dropout(config.hidden_dropout_prob)
    attended = BertSelfAttention(config, self.dtype, self.attention, name="attention")(
        hidden, attention_mask, deterministic)
    hidden = layer_norm(config, "attention_layer_norm")(
        hidden + dropout(attended, deterministic=deterministic))
    intermediate = ACTIVATIONS[config.hidden_act](
        dense(config.intermediate_size, config, self.dtype, "intermediate")(hidden))
    output = dense(config.hidden_size, config, self.dtype, "output", (MLP, EMBED))(intermediate)
    return layer_norm(config, "output_layer_norm")(
        hidden + dropout(output, deterministic=deterministic))


def _layer_step(layer: BertLayer, hidden, attention_mask, deterministic):
  """One iteration of the scan over layers: (carry, broadcast inputs) -> (carry, no output)."""
  return layer(hidden, attention_mask, deterministic), None


class BertModel(nn.Module):
  """The BERT encoder with its pooler.

  Attributes:
    config: the architecture (and the layout of its layers, `config.scan_layers`).
    dtype: compute dtype of matrix multiplications (float32 or bfloat16).
    remat: what each layer keeps for the backward pass, one of `REMAT_POLICIES`.
    attention: how attention's core runs over the batch, one of `AttentionImplementation`.
  """
  config: BertConfig
  dtype: Any = jnp.float32
  remat: RematPolicy = "none"
  attention: AttentionImplementation = "auto"

  @nn.compact
  def __call__(self, token_ids, segment_ids, input_mask, deterministic: bool = True) -> BertOutput:
    """Encodes a batch.

    Args:
      token_ids: [batch, length] int32 WordPiece ids.
      segment_ids: [batch, length] int32, 0 for the first segment and 1 for the second.
      input_mask: [batch, length], nonzero on real tokens and 0 on padding.
      deterministic: disables dropout (evaluation); training passes False and a 'dropout' rng.
    """
    config = self.config
    hidden = BertEmbeddings(config, name="embeddings")(
        token_ids, segment_ids, deterministic)  # [batch, length, hidden]
    attention_mask = (input_mask != 0)[:, None, None, :]  # [batch, 1, 1, length]
    layer = remat_layer(self.remat, scanned=config.scan_layers)
    if config.scan_layers:
      scan = nn.scan(_layer_step, variable_axes={"params": 0},
                     split_rngs={"params": True, "dropout": True},
                     in_axes=(nn.broadcast, nn.broadcast), length=config.num_hidden_layers,
                     metadata_params={nn.PARTITION_NAME: LAYERS})
      hidden, _ = scan(layer(config, self.dtype, self.attention, name="layers"), hidden,
                       attention_mask, deterministic)
    else:
      for index in range(config.num_hidden_layers):
        hidden = layer(config, self.dtype, self.attention, name=f"layer_{index}")(
            hidden, attention_mask, deterministic)
    pooled = jnp.tanh(dense(config.hidden_size, config, self.dtype, "pooler")(
        hidden[:, 0]))  # [batch, hidden]
    return BertOutput(sequence_output=hidden, pooled_output=pooled)


def remat_layer(policy: RematPolicy, *, scanned: bool) -> type[BertLayer]:
  """`BertLayer`, rematerialised in the backward pass by `REMAT_POLICIES[policy]`."""
  if policy not in REMAT_POLICIES:
    raise ValueError(f"remat policy {policy!r} is not one of {sorted(REMAT_POLICIES)}")
  if policy == "none":
    return BertLayer
  # `self` counts as argument 0 of the lifted __call__, so `deterministic` is argument 3. A
  # scan already keeps XLA from merging the recomputation into the forward pass.
  return nn.remat(BertLayer, policy=REMAT_POLICIES[policy], static_argnums=(3,),
                  prevent_cse=not scanned)


def mean_pool(sequence_output: jax.Array, input_mask: jax.Array) -> jax.Array:
  """Mean of the hidden states of real tokens: [batch, length, hidden] -> [batch, hidden]."""
  weights = (input_mask != 0).astype(sequence_output.dtype)[..., None]  # [batch, length, 1]
  return (sequence_output * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1.0)


def parameter_shapes(config: BertConfig) -> dict[str, Any]:
  """The params pytree of `BertModel(config)` as ShapeDtypeStructs (unboxed), without
  allocating it."""
  dummy = jnp.zeros((1, 2), jnp.int32)
  return nn.unbox(jax.eval_shape(
      lambda: initial_params(BertModel(config), jax.random.key(0), dummy, dummy, dummy)))


def initial_params(module: nn.Module, rng: jax.Array, *inputs: Any) -> Any:
  """`module.init(rng, *inputs)["params"]` (boxed), jitted and cached per module: run eagerly,
  the scan over layers would be compiled anew on every call."""
  return _jitted_init(module)(rng, *inputs)


@functools.lru_cache(maxsize=32)
def _jitted_init(module: nn.Module) -> Callable[..., Any]:
  return jax.jit(lambda rng, *inputs: module.init(rng, *inputs)["params"])


def stack_layers(params: dict[str, Any], num_layers: int) -> dict[str, Any]:
  """BERT params with `layer_0` ... `layer_{n-1}` (the loop's layout) as one `layers` entry
  whose leaves are stacked on a leading axis (the scan's layout)."""
  layers = [params[f"layer_{index}"] for index in range(num_layers)]
  stacked = jax.tree.map(lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]),
                         *layers)
  rest = {name: value for name, value in params.items() if not name.startswith("layer_")}
  return dict(rest, layers=stacked)


def unstack_layers(params: dict[str, Any]) -> dict[str, Any]:
  """The inverse of `stack_layers`: the scan's `layers` as `layer_0` ... `layer_{n-1}`."""
  num_layers = len(jax.tree.leaves(params["layers"])[0])
  rest = {name: value for name, value in params.items() if name != "layers"}
  return dict(rest, **{f"layer_{index}": jax.tree.map(lambda leaf, i=index: leaf[i],
                                                      params["layers"])
                       for index in range(num_layers)})


def with_bert_params(boxed: Any, bert_params: Any, bert_config: BertConfig) -> Any:
  """A model's boxed BERT params (`boxed`) holding the arrays of `bert_params`, after checking
  that they fit its architecture."""
  shapes = lambda tree: jax.tree.map(jnp.shape, tree)
  if shapes(bert_params) != shapes(partitioning.unbox(boxed)):
    raise ValueError(f"the BERT params do not fit the BERT architecture {bert_config}")
  return partitioning.with_values(boxed, jax.tree.map(jnp.asarray, bert_params))

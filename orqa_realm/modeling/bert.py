"""BERT as pure Flax linen modules, numerically matching Hugging Face's `BertModel`.

Mixed precision: `dtype` is the compute dtype of matrix multiplications. With bfloat16, inputs and
kernels are cast to bfloat16 and products accumulate in float32 (`preferred_element_type`), which
both keeps accuracy and runs fastest on CPUs with AVX-512 BF16 and on accelerators. The residual
stream, LayerNorm and softmax stay in float32; parameters are always float32.

Parameter names follow Hugging Face's layout closely enough that `hf_import.py` maps them with a
short table: `embeddings/word_embeddings/embedding`, `layer_3/attention/query/kernel`, ...
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
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


class BertOutput(NamedTuple):
  sequence_output: jax.Array  # [batch, length, hidden] float32
  pooled_output: jax.Array  # [batch, hidden] float32, tanh(dense([CLS]))


def _dot_general_f32_accumulation(lhs, rhs, dimension_numbers, precision=None,
                                  preferred_element_type=None):
  """`lax.dot_general` that always accumulates (and returns) float32."""
  del preferred_element_type  # Always float32: that is the point of this function.
  return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                             preferred_element_type=jnp.float32)


def dense(features: int, config: BertConfig, dtype, name: str) -> nn.Dense:
  """A Dense layer with BERT's initialisation, `dtype` inputs and float32 accumulation."""
  return nn.Dense(features, dtype=dtype, dot_general=_dot_general_f32_accumulation,
                  kernel_init=nn.initializers.normal(config.initializer_range), name=name)


def layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
  """LayerNorm computed in float32 whatever the compute dtype."""
  # Two-pass variance, as PyTorch: E[x^2] - E[x]^2 loses precision when the mean is large.
  return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=jnp.float32, use_fast_variance=False,
                      name=name)


def dot_product_attention(query, key, value, mask,
                          dropout: Callable[[jax.Array], jax.Array] | None = None) -> jax.Array:
  """Softmax attention in head-major layout, with dropout on the probabilities while training.

  Batch and heads lead, so both products are plain batched matmuls with no transposes between
  them; on CPU this ran 2.6x faster than `jax.nn.dot_product_attention` (whose default is the
  same math in [batch, length, heads, head_dim] layout), which stays the reference in the tests.

  Args:
    query, key, value: [batch, heads, length, head_dim].
    mask: [batch, 1, 1, length] bool, True where a key may be attended to.
    dropout: applied to the attention probabilities (training); None for none.
  Returns:
    [batch, heads, length, head_dim] float32.
  """
  scale = 1.0 / np.sqrt(query.shape[-1])
  logits = jnp.einsum("bnth,bnsh->bnts", query, key,
                      preferred_element_type=jnp.float32) * scale  # [batch, heads, length, length]
  logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  probabilities = jax.nn.softmax(logits, axis=-1)
  if dropout is not None:
    probabilities = dropout(probabilities)
  return jnp.einsum("bnts,bnsh->bnth", probabilities.astype(value.dtype), value,
                    preferred_element_type=jnp.float32)


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
    init = nn.initializers.normal(config.initializer_range)
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

  @nn.compact
  def __call__(self, hidden, attention_mask, deterministic: bool):
    config = self.config
    heads = config.num_attention_heads
    head_dim = config.hidden_size // heads

    def project(name):  # [batch, length, hidden] -> [batch, heads, length, head_dim]
      projected = dense(config.hidden_size, config, self.dtype, name)(hidden)
      projected = projected.reshape(*projected.shape[:-1], heads, head_dim)
      return jnp.swapaxes(projected, -3, -2).astype(self.dtype)

    context = dot_product_attention(
        project("query"), project("key"), project("value"), attention_mask,
        functools.partial(nn.Dropout(config.attention_probs_dropout_prob),
                          deterministic=deterministic))
    context = jnp.swapaxes(context, -3, -2)  # [batch, length, heads, head_dim]
    context = context.reshape(*context.shape[:-2], config.hidden_size)  # [batch, length, hidden]
    return dense(config.hidden_size, config, self.dtype, "output")(context)


class BertLayer(nn.Module):
  """One post-LayerNorm transformer layer."""
  config: BertConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hidden, attention_mask, deterministic: bool):
    config = self.config
    dropout = nn.Dropout(config.hidden_dropout_prob)
    attended = BertSelfAttention(config, self.dtype, name="attention")(
        hidden, attention_mask, deterministic)
    hidden = layer_norm(config, "attention_layer_norm")(
        hidden + dropout(attended, deterministic=deterministic))
    intermediate = ACTIVATIONS[config.hidden_act](
        dense(config.intermediate_size, config, self.dtype, "intermediate")(hidden))
    output = dense(config.hidden_size, config, self.dtype, "output")(intermediate)
    return layer_norm(config, "output_layer_norm")(
        hidden + dropout(output, deterministic=deterministic))


class BertModel(nn.Module):
  """The BERT encoder with its pooler.

  Attributes:
    config: the architecture.
    dtype: compute dtype of matrix multiplications (float32 or bfloat16).
    remat: recompute each layer's activations in the backward pass (saves memory).
  """
  config: BertConfig
  dtype: Any = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, token_ids, segment_ids, input_mask, deterministic: bool = True) -> BertOutput:
    """Encodes a batch.

    Args:
      token_ids: [batch, length] int32 WordPiece ids.
      segment_ids: [batch, length] int32, 0 for the first segment and 1 for the second.
      input_mask: [batch, length], nonzero on real tokens and 0 on padding.
      deterministic: disables dropout (evaluation); training passes False and a 'dropout' rng.
    """
    hidden = BertEmbeddings(self.config, name="embeddings")(
        token_ids, segment_ids, deterministic)  # [batch, length, hidden]
    attention_mask = (input_mask != 0)[:, None, None, :]  # [batch, 1, 1, length]
    # `self` counts as argument 0 of the lifted __call__, so `deterministic` is argument 3.
    layer = nn.remat(BertLayer, static_argnums=(3,)) if self.remat else BertLayer
    for index in range(self.config.num_hidden_layers):
      hidden = layer(self.config, self.dtype, name=f"layer_{index}")(
          hidden, attention_mask, deterministic)
    pooled = jnp.tanh(dense(self.config.hidden_size, self.config, self.dtype, "pooler")(
        hidden[:, 0]))  # [batch, hidden]
    return BertOutput(sequence_output=hidden, pooled_output=pooled)


def mean_pool(sequence_output: jax.Array, input_mask: jax.Array) -> jax.Array:
  """Mean of the hidden states of real tokens: [batch, length, hidden] -> [batch, hidden]."""
  weights = (input_mask != 0).astype(sequence_output.dtype)[..., None]  # [batch, length, 1]
  return (sequence_output * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1.0)


def parameter_shapes(config: BertConfig) -> dict[str, Any]:
  """The params pytree of `BertModel(config)` as ShapeDtypeStructs, without allocating it."""
  dummy = jnp.zeros((1, 2), jnp.int32)
  return jax.eval_shape(
      lambda: BertModel(config).init(jax.random.key(0), dummy, dummy, dummy))["params"]

"""A llama-architecture causal language model as pure Flax linen, numerically matching Hugging
Face's `LlamaForCausalLM`: RMSNorm before attention and MLP, rotary position embeddings,
grouped-query attention, a SiLU-gated MLP, and an output head that may be the word embeddings.

The model takes explicit positions and an explicit key-value cache, so one forward serves
teacher forcing over a whole sequence (no cache) and incremental generation (the prompt fills the
cache, then one token a call; `generation.py`). A cache holds `max_length` slots per sequence;
a call writes its tokens' keys and values at slots `cache_index ...` and every query attends to
the slots up to its own that `key_mask` marks valid, so left-padded prompts need no special case:
their padding slots are simply never valid.

Mixed precision as the BERT (`bert.py`): `dtype` is the compute dtype of matrix products, which
accumulate in float32; RMSNorm, rotary embeddings, softmax and the logits are float32; parameters
are float32. Layers always run under `nn.scan` (one layer compiled whatever the depth; parameters
stacked on a leading `layers` axis), optionally rematerialised by one of `bert.REMAT_POLICIES`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from orqa_realm.modeling.bert import REMAT_POLICIES, RematPolicy, dot_general_f32_accumulation
from orqa_realm.modeling.partitioning import EMBED, HEADS, LAYERS, MLP, VOCAB, logical


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """The architecture of a llama decoder (the fields of a Hugging Face LlamaConfig we use)."""
  vocab_size: int = 49152
  hidden_size: int = 576
  intermediate_size: int = 1536
  num_hidden_layers: int = 30
  num_attention_heads: int = 9
  num_key_value_heads: int = 3
  rms_norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  max_position_embeddings: int = 8192
  tie_word_embeddings: bool = True
  initializer_range: float = 0.02

  def __post_init__(self):
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                       f"num_attention_heads {self.num_attention_heads}")
    if self.num_attention_heads % self.num_key_value_heads:
      raise ValueError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                       f"num_key_value_heads {self.num_key_value_heads}")
    if self.head_dim % 2:
      raise ValueError(f"rotary embeddings need an even head size, not {self.head_dim}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> DecoderConfig:
    """Builds a config from a dict, ignoring keys that are not architecture fields."""
    names = {field.name for field in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in values.items() if key in names})

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


class KVCache(NamedTuple):
  """Keys and values of every layer at every slot; a pytree, so it passes through `jax.jit`."""
  keys: jax.Array  # [layers, batch, kv_heads, max_length, head_dim] compute dtype
  values: jax.Array  # [layers, batch, kv_heads, max_length, head_dim] compute dtype


class DecoderOutput(NamedTuple):
  hidden: jax.Array  # [batch, length, hidden] float32, after the final RMSNorm
  cache: KVCache | None  # the cache with this call's slots written; None without a cache


def empty_cache(config: DecoderConfig, batch_size: int, max_length: int,
                dtype: Any = jnp.float32) -> KVCache:
  """A cache of `max_length` slots per sequence, all zero (`key_mask` says which are valid)."""
  shape = (config.num_hidden_layers, batch_size, config.num_key_value_heads, max_length,
           config.head_dim)
  return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def rotary_embedding(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, ...]:
  """The cosines and sines of rotary embeddings at `positions` [batch, length]: each
  [batch, 1, length, head_dim] float32, the frequencies repeated over both halves as Hugging
  Face's `rotate_half` layout expects."""
  inverse_frequencies = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
  angles = positions.astype(jnp.float32)[..., None] * inverse_frequencies  # [batch, length, d/2]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, None]  # [batch, 1, length, head_dim]
  return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates the pairs (x_i, x_{i + d/2}) of x [batch, heads, length, head_dim] in float32."""
  x = x.astype(jnp.float32)
  first, second = jnp.split(x, 2, axis=-1)
  return x * cos + jnp.concatenate([-second, first], axis=-1) * sin


def attention_mask(key_mask: jax.Array, cache_index: jax.Array | int,
                   length: int) -> jax.Array:
  """Which slots each of `length` queries written from `cache_index` may attend to: the valid
  slots (`key_mask` [batch, slots]) up to its own. Returns [batch, 1, 1, length, slots] bool."""
  query_slots = cache_index + jnp.arange(length)  # [length]
  causal = jnp.arange(key_mask.shape[-1])[None, :] <= query_slots[:, None]  # [length, slots]
  return (key_mask.astype(bool)[:, None, :] & causal)[:, None, None]


def grouped_query_attention(query, key, value, mask) -> jax.Array:
  """Softmax attention where each of the kv heads serves a group of query heads.

  Args:
    query: [batch, heads, length, head_dim]; key, value: [batch, kv_heads, slots, head_dim].
    mask: [batch, 1, 1, length, slots] bool, True where a query may attend to a slot.
  Returns:
    [batch, heads, length, head_dim] float32.
  """
  batch, heads, length, head_dim = query.shape
  kv_heads = key.shape[1]
  grouped = query.reshape(batch, kv_heads, heads // kv_heads, length, head_dim)
  logits = jnp.einsum("bkgth,bksh->bkgts", grouped, key,
                      preferred_element_type=jnp.float32) / np.sqrt(head_dim)
  logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  probabilities = jax.nn.softmax(logits, axis=-1)  # [batch, kv_heads, group, length, slots]
  context = jnp.einsum("bkgts,bksh->bkgth", probabilities.astype(value.dtype), value,
                       preferred_element_type=jnp.float32)
  return context.reshape(batch, heads, length, head_dim)


class RMSNorm(nn.Module):
  """x / rms(x) * scale, in float32."""
  epsilon: float

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", logical(nn.initializers.ones_init(), EMBED), (x.shape[-1],))
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.epsilon) * scale


def _projection(features: int, config: DecoderConfig, dtype, name: str,
                axes: tuple[str, str]) -> nn.Dense:
  """A bias-free Dense layer with `dtype` inputs and float32 accumulation."""
  return nn.Dense(features, use_bias=False, dtype=dtype, dot_general=dot_general_f32_accumulation,
                  kernel_init=logical(nn.initializers.normal(config.initializer_range), *axes),
                  name=name)


class DecoderAttention(nn.Module):
  """Grouped-query self-attention with rotary embeddings, reading and writing a cache."""
  config: DecoderConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hidden, rotary, mask, cache_index, layer_cache):
    config = self.config
    head_dim = config.head_dim

    def project(name, heads):  # [batch, length, hidden] -> [batch, heads, length, head_dim]
      projected = _projection(heads * head_dim, config, self.dtype, name, (EMBED, HEADS))(hidden)
      return jnp.swapaxes(projected.reshape(*projected.shape[:-1], heads, head_dim), 1, 2)

    cos, sin = rotary
    query = apply_rotary(project("query", config.num_attention_heads), cos, sin)
    key = apply_rotary(project("key", config.num_key_value_heads), cos, sin)
    value = project("value", config.num_key_value_heads)
    key, value = key.astype(self.dtype), value.astype(self.dtype)
    if layer_cache is not None:
      # [batch, kv_heads, max_length, head_dim], this call's slots overwritten.
      key = jax.lax.dynamic_update_slice_in_dim(layer_cache[0], key, cache_index, axis=2)
      value = jax.lax.dynamic_update_slice_in_dim(layer_cache[1], value, cache_index, axis=2)
      layer_cache = (key, value)
    context = grouped_query_attention(query.astype(self.dtype), key, value, mask)
    context = jnp.swapaxes(context, 1, 2)  # [batch, length, heads, head_dim]
    context = context.reshape(*context.shape[:-2], config.hidden_size)
    output = _projection(config.hidden_size, config, self.dtype, "output", (HEADS, EMBED))(context)
    return output, layer_cache


class DecoderLayer(nn.Module):
  """One pre-RMSNorm llama layer: attention then the SiLU-gated MLP, each residual. Its call
  is a scan step: (hidden, broadcast inputs, this layer's cache) -> (hidden, its new cache)."""
  config: DecoderConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hidden, rotary, mask, cache_index, layer_cache):
    config = self.config
    attended, layer_cache = DecoderAttention(config, self.dtype, name="attention")(
        RMSNorm(config.rms_norm_eps, name="attention_norm")(hidden), rotary, mask, cache_index,
        layer_cache)
    hidden = hidden + attended
    normed = RMSNorm(config.rms_norm_eps, name="mlp_norm")(hidden)
    gate = _projection(config.intermediate_size, config, self.dtype, "gate", (EMBED, MLP))(normed)
    up = _projection(config.intermediate_size, config, self.dtype, "up", (EMBED, MLP))(normed)
    down = _projection(config.hidden_size, config, self.dtype, "down", (MLP, EMBED))(
        (jax.nn.silu(gate) * up).astype(self.dtype))
    return hidden + down, layer_cache


class DecoderLM(nn.Module):
  """The causal LM: `__call__` gives the final hidden states (and the updated cache), `logits`
  maps hidden states to the vocabulary, so that a caller that needs a few positions' logits
  (a question's tokens, the last prompt token) never builds the rest.

  Attributes:
    config: the architecture.
    dtype: compute dtype of matrix products (float32 or bfloat16); also the cache's dtype.
    remat: what each layer keeps for the backward pass, one of `bert.REMAT_POLICIES`.
  """
  config: DecoderConfig
  dtype: Any = jnp.float32
  remat: RematPolicy = "none"

  def setup(self):
    config = self.config
    self.embed_tokens = nn.Embed(
        config.vocab_size, config.hidden_size,
        embedding_init=logical(nn.initializers.normal(config.initializer_range), VOCAB, EMBED))
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"remat policy {self.remat!r} is not one of {sorted(REMAT_POLICIES)}")
    layer = DecoderLayer
    if self.remat != "none":
      layer = nn.remat(DecoderLayer, policy=REMAT_POLICIES[self.remat], prevent_cse=False)
    self.layers = nn.scan(
        layer, variable_axes={"params": 0}, split_rngs={"params": True},
        in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0),
        length=config.num_hidden_layers,
        metadata_params={nn.PARTITION_NAME: LAYERS})(config, self.dtype)
    self.norm = RMSNorm(config.rms_norm_eps)
    if not config.tie_word_embeddings:
      self.lm_head = _projection(config.vocab_size, config, self.dtype, "lm_head", (EMBED, VOCAB))

  def __call__(self, token_ids, positions, key_mask, cache: KVCache | None = None,
               cache_index: jax.Array | int = 0) -> DecoderOutput:
    """Runs `length` tokens.

    Args:
      token_ids: [batch, length] int32.
      positions: [batch, length] int32, each token's position (its rotary angle).
      key_mask: [batch, slots], nonzero on slots that may be attended to: without a cache the
        tokens themselves (slots = length), with one the cache's slots (slots = max_length).
      cache: None for a plain forward, else the cache to read and write.
      cache_index: the cache slot of the first token.
    """
    rotary = rotary_embedding(positions, self.config.head_dim, self.config.rope_theta)
    mask = attention_mask(key_mask, cache_index, token_ids.shape[1])
    hidden = self.embed_tokens(token_ids).astype(jnp.float32)  # [batch, length, hidden]
    layer_caches = None if cache is None else (cache.keys, cache.values)
    hidden, layer_caches = self.layers(hidden, rotary, mask, cache_index, layer_caches)
    new_cache = None if cache is None else KVCache(*layer_caches)
    return DecoderOutput(hidden=self.norm(hidden), cache=new_cache)

  def logits(self, hidden) -> jax.Array:
    """[..., hidden] -> [..., vocab] float32 logits."""
    if self.config.tie_word_embeddings:
      return jnp.einsum("...h,vh->...v", hidden.astype(self.dtype),
                        self.embed_tokens.embedding.astype(self.dtype),
                        preferred_element_type=jnp.float32)
    return self.lm_head(hidden).astype(jnp.float32)


def _forward_and_logits(module: DecoderLM, token_ids, positions, key_mask):
  """The forward and `logits`: a method for `init` that touches every parameter, the head's too."""
  return module.logits(module(token_ids, positions, key_mask).hidden)


def init_params(config: DecoderConfig, rng: jax.Array) -> Any:
  """Random boxed params of `DecoderLM(config)` (their logical axes attached)."""
  dummy = jnp.zeros((1, 2), jnp.int32)
  return jax.jit(lambda key: DecoderLM(config).init(
      key, dummy, dummy, jnp.ones((1, 2), bool), method=_forward_and_logits)["params"])(rng)


def parameter_shapes(config: DecoderConfig) -> Any:
  """The params pytree of `DecoderLM(config)` as ShapeDtypeStructs (unboxed), without
  allocating it."""
  return nn.unbox(jax.eval_shape(lambda: init_params(config, jax.random.key(0))))

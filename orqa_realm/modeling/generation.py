"""Batched generation and teacher-forced scoring with a `decoder.DecoderLM`.

`generate` runs left-padded prompts through the model once, filling a cache, then one token a
step under `lax.while_loop` until every sequence has ended or `max_new_tokens` are out; greedy,
or sampled with a temperature and nucleus (top-p) filtering. Several samples of one prompt share
its prefill (the cache is copied after it), which is most of the cost when prompts are long and
replies short, as doc2query's are. `token_log_probs` is the teacher-forced log-probability of
every next token; `continuation_token_log_probs` that of a continuation's tokens only, for
scoring one (ART's question likelihood, the fine-tuning loss).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from orqa_realm.modeling.decoder import DecoderLM, empty_cache


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
  """How each next token is chosen. temperature 0 is greedy (the argmax)."""
  max_new_tokens: int = 32
  temperature: float = 0.0
  top_p: float = 1.0

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be at least 1, not {self.max_new_tokens}")
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0, not {self.temperature}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")


def nucleus_logits(logits: jax.Array, top_p: float) -> jax.Array:
  """`logits` [batch, vocab] with every token outside the nucleus at -inf: the smallest set of
  most probable tokens whose probability reaches `top_p` (the most probable always kept)."""
  order = jnp.argsort(-logits, axis=-1)
  sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
  probabilities = jax.nn.softmax(sorted_logits, axis=-1)
  mass_before = jnp.cumsum(probabilities, axis=-1) - probabilities  # [batch, vocab]
  sorted_kept = mass_before < top_p
  kept = jnp.zeros_like(sorted_kept).at[
      jnp.arange(logits.shape[0])[:, None], order].set(sorted_kept)
  return jnp.where(kept, logits, -jnp.inf)


def choose_tokens(logits: jax.Array, rng: jax.Array, settings: SamplingSettings) -> jax.Array:
  """The next token of each sequence from its logits [batch, vocab] float32 -> [batch] int32."""
  if settings.temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / settings.temperature
  if settings.top_p < 1:
    logits = nucleus_logits(logits, settings.top_p)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def prompt_positions(prompt_mask: jax.Array) -> jax.Array:
  """Positions of left-padded prompt tokens: each real token's index among its row's real
  tokens (padding gets 0, never attended to). [batch, length] -> [batch, length] int32."""
  mask = prompt_mask.astype(jnp.int32)
  return jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0)


@functools.partial(jax.jit, static_argnames=("model", "settings", "eos_id", "pad_id",
                                             "samples_per_prompt"))
def generate(model: DecoderLM, params: Any, prompt_ids: jax.Array, prompt_mask: jax.Array,
             rng: jax.Array, *, settings: SamplingSettings, eos_id: int, pad_id: int,
             samples_per_prompt: int = 1) -> jax.Array:
  """Continues each prompt until it emits `eos_id` or has `settings.max_new_tokens` tokens.

  Args:
    model, params: the decoder and its (unboxed) params.
    prompt_ids: [prompts, prompt_length] int32, left-padded (the last column is every prompt's
      last token).
    prompt_mask: [prompts, prompt_length], nonzero on real tokens.
    rng: the sampling key (unused when greedy).
    settings: max_new_tokens, temperature, top_p.
    eos_id: the token that ends a sequence (it is kept in the output).
    pad_id: what follows a sequence's end in the output.
    samples_per_prompt: continuations of each prompt, from one prefill of it.
  Returns:
    [prompts * samples_per_prompt, max_new_tokens] int32: the new tokens, `pad_id` after each
    sequence's end; prompt i's continuations are rows i * samples_per_prompt, ... (those of a
    prompt repeated that many times in `prompt_ids`).
  """
  prompts, prompt_length = prompt_ids.shape
  steps = settings.max_new_tokens
  cache = empty_cache(model.config, prompts, prompt_length + steps, model.dtype)
  # Generated slots are valid from the moment they are written; causality hides later ones.
  key_mask = jnp.concatenate([prompt_mask.astype(bool), jnp.ones((prompts, steps), bool)],
                             axis=1)
  positions = prompt_positions(prompt_mask)
  prefill = model.apply({"params": params}, prompt_ids, positions, key_mask, cache, 0)

  def per_sample(x, axis=0):  # each prompt's row repeated for its samples
    return jnp.repeat(x, samples_per_prompt, axis=axis)

  batch = prompts * samples_per_prompt
  prefill_cache = jax.tree.map(functools.partial(per_sample, axis=1), prefill.cache)
  key_mask, positions = per_sample(key_mask), per_sample(positions)
  last_hidden = per_sample(prefill.hidden[:, -1])  # [batch, hidden]

  def next_logits(hidden):
    return model.apply({"params": params}, hidden, method=DecoderLM.logits)

  def step(state):
    index, cache, logits, next_position, done, tokens, rng = state
    rng, key = jax.random.split(rng)
    chosen = jnp.where(done, pad_id, choose_tokens(logits, key, settings))  # [batch]
    tokens = tokens.at[:, index].set(chosen)
    done = done | (chosen == eos_id)
    output = model.apply({"params": params}, chosen[:, None], next_position[:, None], key_mask,
                         cache, prompt_length + index)
    return (index + 1, output.cache, next_logits(output.hidden[:, 0]), next_position + 1, done,
            tokens, rng)

  def not_finished(state):
    index, done = state[0], state[4]
    return (index < steps) & ~jnp.all(done)

  initial = (jnp.int32(0), prefill_cache, next_logits(last_hidden), positions[:, -1] + 1,
             jnp.zeros((batch,), bool), jnp.full((batch, steps), pad_id, jnp.int32), rng)
  return jax.lax.while_loop(not_finished, step, initial)[5]


def token_log_probs(model: DecoderLM, params: Any, token_ids: jax.Array,
                    input_mask: jax.Array) -> jax.Array:
  """Teacher-forced log p(token t + 1 | tokens <= t) of right-padded sequences.

  Args:
    token_ids: [batch, length] int32; input_mask: [batch, length], nonzero on real tokens.
  Returns:
    [batch, length - 1] float32: entry t is the log-probability of token t + 1 (meaningful
    where token t + 1 is real).
  """
  positions = jnp.broadcast_to(jnp.arange(token_ids.shape[1]), token_ids.shape)
  hidden = model.apply({"params": params}, token_ids, positions, input_mask).hidden
  logits = model.apply({"params": params}, hidden[:, :-1], method=DecoderLM.logits)
  log_probs = jax.nn.log_softmax(logits, axis=-1)  # [batch, length - 1, vocab]
  return jnp.take_along_axis(log_probs, token_ids[:, 1:, None], axis=-1)[..., 0]


def continuation_token_log_probs(model: DecoderLM, params: Any, token_ids: jax.Array,
                                input_mask: jax.Array, continuation_start: jax.Array,
                                max_continuation: int) -> jax.Array:
  """Teacher-forced log-probabilities of each sequence's continuation tokens, with the
  vocabulary's logits built only where a continuation token is predicted (a prompt's logits,
  most of a long sequence's, are never formed).

  Args:
    token_ids: [batch, length] int32 right-padded: a prefix, then the continuation.
    input_mask: [batch, length], nonzero on real tokens.
    continuation_start: [batch] int32, the position of each continuation's first token (>= 1).
    max_continuation: the static bound on continuation lengths.
  Returns:
    [batch, max_continuation] float32: entry j is log p(token start + j | everything before);
    meaningless past a continuation's end (the caller masks with its length).
  """
  positions = jnp.broadcast_to(jnp.arange(token_ids.shape[1]), token_ids.shape)
  hidden = model.apply({"params": params}, token_ids, positions, input_mask).hidden
  offsets = jnp.arange(max_continuation)  # [continuation]
  targets_at = jnp.minimum(continuation_start[:, None] + offsets, token_ids.shape[1] - 1)
  predicting = jnp.take_along_axis(hidden, (targets_at - 1)[..., None], axis=1)  # [b, c, hidden]
  logits = model.apply({"params": params}, predicting, method=DecoderLM.logits)
  log_probs = jax.nn.log_softmax(logits, axis=-1)  # [batch, continuation, vocab]
  targets = jnp.take_along_axis(token_ids, targets_at, axis=1)  # [batch, continuation]
  return jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]


def continuation_mask(continuation_length: jax.Array, max_continuation: int) -> jax.Array:
  """[batch] lengths -> [batch, max_continuation] bool, True on a continuation's tokens."""
  return jnp.arange(max_continuation)[None, :] < continuation_length[:, None]


def continuation_log_likelihood(model: DecoderLM, params: Any, token_ids: jax.Array,
                                input_mask: jax.Array, continuation_start: jax.Array,
                                continuation_length: jax.Array,
                                max_continuation: int) -> jax.Array:
  """Mean log-probability of each sequence's continuation given what precedes it (teacher
  forcing): `continuation_token_log_probs` averaged over the `continuation_length` [batch]
  tokens (each >= 1, <= max_continuation) -> [batch] float32."""
  token_scores = continuation_token_log_probs(model, params, token_ids, input_mask,
                                              continuation_start, max_continuation)
  valid = continuation_mask(continuation_length, max_continuation)
  return jnp.sum(jnp.where(valid, token_scores, 0.0), axis=-1) / jnp.maximum(
      continuation_length, 1)

"""ORQA's span reader: BERT over `[CLS] question [SEP] block [SEP]`, a score for every span of the
block up to `max_span_width` wordpieces.

Span score (ORQA): the token states go through one dense layer of 2 x `span_hidden_size`, split
into a start part and an end part; a span's start part (at its first token) and end part (at its
last) are added, then ReLU, LayerNorm and a dense layer to one logit. The retrieval logit of the
span's block is added by the caller (`orqa_realm.tasks`), which owns retrieval.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from orqa_realm.core.config import setting
from orqa_realm.data.reader_inputs import Spans, enumerate_spans
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.modeling.bert import (BertBacked, BertConfig, BertModel, RematPolicy, dense,
                                      initial_params, layer_norm, with_bert_params)
from orqa_realm.modeling.partitioning import MLP

# The logit of a span outside the block: exp() of it is 0, and adding a retrieval logit to it stays
# finite.
MASKED_SPAN_LOGIT = -1e9


@dataclasses.dataclass(frozen=True)
class ReaderConfig(BertBacked):
  """The reader's architecture.

  Attributes:
    bert: the encoder (None in a task's settings: --bert's, filled in when the task starts).
    span_hidden_size: width of each of the start and end parts (256 in ORQA).
    max_span_width: longest span, in wordpieces (10 in ORQA).
  """
  bert: BertConfig | None = None
  span_hidden_size: int = setting(256, "Width of the span scorer's start and end parts.")
  max_span_width: int = setting(10, "Longest answer span, in wordpieces.")


def valid_spans(block_mask: jax.Array, spans: Spans) -> jax.Array:
  """[batch, num_spans] bool: spans lying wholly inside the block.

  Args:
    block_mask: [batch, length] bool, True on the block's own wordpieces (not the question, the
      separators or padding). The block's tokens are contiguous, so a span whose first and last
      tokens are in the block lies wholly in it.
  """
  return block_mask[:, spans.starts] & block_mask[:, spans.ends]


class SpanHead(nn.Module):
  """Token states -> span logits, ORQA's span scorer."""
  config: ReaderConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hidden: jax.Array, spans: Spans) -> jax.Array:
    """[batch, length, hidden] -> [batch, num_spans] float32 logits (unmasked)."""
    config = self.config
    projected = dense(2 * config.span_hidden_size, config.bert, self.dtype,
                      "span_projection")(hidden)  # [batch, length, 2 * span_hidden]
    start_part, end_part = jnp.split(projected, 2, axis=-1)  # each [batch, length, span_hidden]
    span_hidden = nn.relu(start_part[:, spans.starts] + end_part[:, spans.ends])
    span_hidden = layer_norm(config.bert, "span_layer_norm", MLP)(span_hidden)  # [batch, spans, S]
    return dense(1, config.bert, self.dtype, "span_logit", (MLP, None))(
        span_hidden)[..., 0].astype(jnp.float32)


class ReaderOutput(NamedTuple):
  logits: jax.Array  # [batch, num_spans] float32, MASKED_SPAN_LOGIT outside the block
  valid: jax.Array  # [batch, num_spans] bool
  spans: Spans  # the static (start, end) of each span


class SpanReader(nn.Module):
  """BERT over question + block, then a logit for each span of the block."""
  config: ReaderConfig
  dtype: Any = jnp.float32
  remat: RematPolicy = "none"

  @nn.compact
  def __call__(self, inputs: TokenBatch, block_mask: jax.Array,
               deterministic: bool = True) -> ReaderOutput:
    """Scores every span of width <= max_span_width inside each input's block.

    Args:
      inputs: [batch, length] `[CLS] question [SEP] block [SEP]`, segments 0 then 1.
      block_mask: [batch, length] bool, True on the block's wordpieces.
      deterministic: disables dropout.
    """
    hidden = BertModel(self.config.bert, self.dtype, self.remat, name="bert")(
        inputs.token_ids, inputs.segment_ids, inputs.input_mask, deterministic).sequence_output
    spans = enumerate_spans(hidden.shape[1], self.config.max_span_width)
    logits = SpanHead(self.config, self.dtype, name="span_head")(hidden, spans)
    valid = valid_spans(block_mask, spans)
    return ReaderOutput(jnp.where(valid, logits, MASKED_SPAN_LOGIT), valid, spans)


def init_params(config: ReaderConfig, rng: jax.Array,
                bert_params: dict[str, Any] | None = None) -> dict[str, Any]:
  """Reader params, boxed with their logical axes: the span head freshly initialised, BERT from
  `bert_params` if given."""
  dummy = TokenBatch(*(jnp.zeros((1, 8), jnp.int32) for _ in range(3)))
  params = initial_params(SpanReader(config), rng, dummy, jnp.ones((1, 8), bool))
  if bert_params is not None:
    params = dict(params, bert=with_bert_params(params["bert"], bert_params, config.bert))
  return params

"""DeepCT's term weighter (Dai and Callan 2019): BERT reads a passage and a linear layer on each
wordpiece's final state regresses the importance of the word it starts.

Trained against query term recall (`data/deepct.py`), the weights replace term frequencies in a
BM25 index (`encode/deepct.py`): the retrieval model stays BM25, only what it counts changes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from orqa_realm.core.config import setting
from orqa_realm.data.blocks import BlockFormat, check_block_format
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.modeling.bert import (BertBacked, BertConfig, BertModel, RematPolicy, dense,
                                      initial_params, with_bert_params)
from orqa_realm.modeling.partitioning import EMBED

# Where a DeepCT run's model description keeps its settings.
DEEPCT = "deepct"


@dataclasses.dataclass(frozen=True)
class DeepCTConfig(BertBacked):
  """A DeepCT term weighter: its BERT and how it reads a block. `bert` is None in settings, where
  it is read from --bert's directory (`with_bert`)."""
  bert: BertConfig | None = None
  block_length: int = setting(
      256, "Wordpieces per block, [CLS], [SEP]s and title included; longer blocks are cut (their "
      "words past the cut get no weight, so BM25 does not index them).")
  block_format: BlockFormat = setting(
      "pair", "Block input: 'pair' = [CLS] title [SEP] text [SEP] with the text as segment 1 "
      "(ORQA); 'joined' = [CLS] title text [SEP] in segment 0.")

  def __post_init__(self):
    check_block_format(self.block_format)


class TermWeighter(nn.Module):
  """[batch, length] inputs -> [batch, length] float32 weights, one per wordpiece (only a word's
  first piece is read)."""
  config: DeepCTConfig
  dtype: Any = jnp.float32
  remat: RematPolicy = "none"

  @nn.compact
  def __call__(self, inputs: TokenBatch, deterministic: bool = True) -> jax.Array:
    bert = self.config.bert
    states = BertModel(bert, self.dtype, self.remat, name="bert")(
        inputs.token_ids, inputs.segment_ids, inputs.input_mask,
        deterministic).sequence_output  # [batch, length, hidden]
    states = nn.Dropout(bert.hidden_dropout_prob)(states, deterministic=deterministic)
    weights = dense(1, bert, self.dtype, "term_weight", (EMBED, None))(states)
    return weights[..., 0].astype(jnp.float32)  # [batch, length]


def init_params(config: DeepCTConfig, rng: jax.Array,
                bert_params: dict[str, Any] | None = None) -> dict[str, Any]:
  """Term-weighter params, boxed with their logical axes: the weight layer freshly initialised,
  BERT from `bert_params` if given."""
  dummy = TokenBatch(*(jnp.zeros((1, 8), jnp.int32) for _ in range(3)))
  params = initial_params(TermWeighter(config), rng, dummy)
  if bert_params is not None:
    params = dict(params, bert=with_bert_params(params["bert"], bert_params, config.bert))
  return params


def masked_mse(weights: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
  """DeepCT's loss: the mean squared error of `weights` against `targets` over the positions
  where `mask` is 1 ([batch, length] each -> [])."""
  return jnp.sum(mask * (weights - targets) ** 2) / jnp.maximum(jnp.sum(mask), 1.0)

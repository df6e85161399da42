"""The cross-encoder (monoBERT, BERT_CAT): BERT reads a query and a passage together,
`[CLS] query [SEP] title text [SEP]`, and a linear head on [CLS] gives their relevance score.

Unlike the dual encoder it embeds nothing: every (query, passage) pair is a forward pass, so it
reranks a first-stage retriever's candidates and teaches the dual encoder (distillation). The
head reads BERT's pooler output (as Hugging Face's BertForSequenceClassification and
sentence-transformers' CrossEncoder do) or the raw [CLS] state.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from orqa_realm.core.config import setting
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.modeling.bert import (BertBacked, BertConfig, BertModel, RematPolicy, dense,
                                      initial_params, with_bert_params)
from orqa_realm.modeling.partitioning import EMBED

CrossPooling = Literal["pooled", "cls"]

# Where a run that trains a cross-encoder keeps its settings in its model description.
CROSS_ENCODER = "cross_encoder"
# Where a run that trains a retriever and a cross-encoder ranker jointly (RocketQAv2) keeps the
# ranker's settings, and its parameters.
JOINT_RANKER = "ranker"


@dataclasses.dataclass(frozen=True)
class CrossEncoderConfig(BertBacked):
  """The cross-encoder: its architecture and how it packs a (query, passage) pair.

  `bert` is None in a task's settings, where it is read from --bert's config.json when the task
  starts (`with_bert`). Saved with the run and read back by whoever reranks with it.
  """
  bert: BertConfig | None = None
  pooling: CrossPooling = setting(
      "pooled", "What the score head reads: BERT's pooler output on [CLS] (monoBERT, Hugging "
      "Face sequence classification) or the raw [CLS] state.", flag="cross_pooling")
  query_length: int = setting(
      64, "Most query wordpieces in a cross-encoder input; the passage gets the rest.",
      flag="cross_query_length")
  max_length: int = setting(
      320, "Wordpieces per cross-encoder input, [CLS] query [SEP] title text [SEP].",
      flag="cross_length")

  def __post_init__(self):
    if self.pooling not in typing.get_args(CrossPooling):
      raise ValueError(f"pooling {self.pooling!r} is not one of {typing.get_args(CrossPooling)}")
    if self.query_length < 1:
      raise ValueError(f"a query length of {self.query_length} wordpieces leaves no query")
    if self.query_length >= self.max_length - 3:
      raise ValueError(f"a query of {self.query_length} wordpieces leaves no room for a passage "
                       f"in {self.max_length}")


class CrossEncoder(nn.Module):
  """(query, passage) pairs -> one relevance score each."""
  config: CrossEncoderConfig
  dtype: Any = jnp.float32
  remat: RematPolicy = "none"

  @nn.compact
  def __call__(self, pairs: TokenBatch, deterministic: bool = True) -> jax.Array:
    """[..., length] packed pairs -> [...] float32 scores (leading axes are kept, so a batch
    of queries x candidates scores in one call)."""
    leading = pairs.token_ids.shape[:-1]
    flat = TokenBatch(*(array.reshape(-1, array.shape[-1]) for array in pairs))
    output = BertModel(self.config.bert, self.dtype, self.remat, name="bert")(
        flat.token_ids, flat.segment_ids, flat.input_mask, deterministic)
    pooled = (output.pooled_output if self.config.pooling == "pooled"
              else output.sequence_output[:, 0])  # [pairs, hidden]
    pooled = nn.Dropout(self.config.bert.hidden_dropout_prob)(pooled, deterministic=deterministic)
    scores = dense(1, self.config.bert, self.dtype, "score", (EMBED, None))(pooled)
    return scores[:, 0].astype(jnp.float32).reshape(leading)


def init_params(config: CrossEncoderConfig, rng: jax.Array,
                bert_params: dict[str, Any] | None = None) -> dict[str, Any]:
  """Cross-encoder params, boxed with their logical axes: the score head freshly initialised,
  BERT (pooler included) from `bert_params` if given."""
  dummy = TokenBatch(*(jnp.zeros((1, 8), jnp.int32) for _ in range(3)))
  params = initial_params(CrossEncoder(config), rng, dummy)
  if bert_params is not None:
    params = dict(params, bert=with_bert_params(params["bert"], bert_params, config.bert))
  return params

"""SPLADE (Formal et al. 2021; the max-pooled "SPLADE v2"): a BERT with its masked-language-model
head read as a bag of vocabulary terms.

Each input wordpiece's MLM logits over the vocabulary go through log(1 + relu(.)) and are
max-pooled over the input's real wordpieces: one [vocab] vector of term weights, mostly zero,
for a query or a passage, and a pair scores their dot product. An inverted index over the
passages' vectors (`index/sparse.py`) then searches like BM25, with learned weights and
expansion terms. Training adds the FLOPS regulariser (Paria et al. 2020): the squared mean
weight of each term over the batch, summed over the vocabulary, which pushes frequent terms to
zero and so bounds the cost of a search.

The model is `mlm.KnowledgeAugmentedEncoder` applied at every position, so its parameters have
the MLM head's layout and a `BertForMaskedLM` checkpoint (`cls.predictions.*`) imports into it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from orqa_realm.core.config import setting
from orqa_realm.data.blocks import BlockFormat, check_block_format
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.modeling import mlm
from orqa_realm.modeling.bert import BertBacked, BertConfig

# Where a SPLADE run's model description keeps its settings.
SPLADE = "splade"


@dataclasses.dataclass(frozen=True)
class SpladeConfig(BertBacked):
  """A SPLADE encoder: its BERT (with the MLM head) and how it reads queries and blocks. `bert`
  is None in settings, where it is read from --bert's directory (`with_bert`)."""
  bert: BertConfig | None = None
  query_length: int = setting(64, "Wordpieces per query, [CLS] and [SEP] included.")
  block_length: int = setting(
      256, "Wordpieces per block, [CLS], [SEP]s and title included; longer blocks are cut.")
  block_format: BlockFormat = setting(
      "pair", "Block input: 'pair' = [CLS] title [SEP] text [SEP] with the text as segment 1 "
      "(ORQA); 'joined' = [CLS] title text [SEP] in segment 0.")

  def __post_init__(self):
    check_block_format(self.block_format)

  @property
  def encoder(self) -> mlm.KnowledgeEncoderConfig:
    return mlm.KnowledgeEncoderConfig(self.bert)


def splade_pool(logits: jax.Array, input_mask: jax.Array) -> jax.Array:
  """Term weights max(log(1 + relu(logits))) over each input's real wordpieces.

  Args:
    logits: [batch, length, vocab] MLM logits at every position.
    input_mask: [batch, length], nonzero on real wordpieces.
  Returns:
    [batch, vocab] float32, every weight >= 0.
  """
  weights = jnp.log1p(jax.nn.relu(logits.astype(jnp.float32)))  # [batch, length, vocab]
  return jnp.max(jnp.where(input_mask[..., None] > 0, weights, 0.0), axis=1)


def term_weights(model: mlm.KnowledgeAugmentedEncoder, params: Any, inputs: TokenBatch,
                 deterministic: bool = True, rng: jax.Array | None = None) -> jax.Array:
  """[batch, length] inputs -> [batch, vocab] SPLADE vectors (`params`: the encoder's)."""
  batch, length = inputs.token_ids.shape
  positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
  logits = model.apply({"params": params}, inputs, positions, deterministic,
                       rngs=None if rng is None else {"dropout": rng})  # [batch, length, vocab]
  return splade_pool(logits, inputs.input_mask)


def flops_regularizer(weights: jax.Array) -> jax.Array:
  """FLOPS: sum over the vocabulary of the squared mean weight of each term over the batch
  ([batch, vocab] -> []), a smooth proxy for the number of postings a search reads."""
  return jnp.sum(jnp.mean(jnp.abs(weights), axis=0) ** 2)

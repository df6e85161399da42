"""REALM's knowledge-augmented encoder: BERT over `[CLS] masked query [SEP] document [SEP]` with a
masked-language-model head tied to the word embeddings.

The head is BERT's (Hugging Face `BertForMaskedLM`'s `cls.predictions`): dense(hidden) ->
activation -> LayerNorm -> inner product with the word embeddings + an output bias. It scores
only the masked positions, so the [vocab]-wide output is [queries x candidates, max_masks, vocab]
rather than per token. A checkpoint with an MLM head (`cls.predictions.*`) initialises it through
`mlm_head_params`; all-MiniLM-L6-v2 has none, so REALM from MiniLM starts with a fresh transform
and bias on the pretrained (tied) word embeddings.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from orqa_realm.core.errors import InputError
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.modeling import partitioning
from orqa_realm.modeling.hf_import import HFBert
from orqa_realm.modeling.bert import (ACTIVATIONS, BertConfig, BertModel, RematPolicy, dense,
                                      initial_params, layer_norm, with_bert_params)
from orqa_realm.modeling.partitioning import MLP, VOCAB, logical


# Where a REALM run keeps the knowledge-augmented encoder's params, beside the retriever's.
KNOWLEDGE_ENCODER = "knowledge_encoder"


@dataclasses.dataclass(frozen=True)
class KnowledgeEncoderConfig:
  bert: BertConfig

  def to_dict(self) -> dict[str, Any]:
    return dict(bert=self.bert.to_dict())

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> KnowledgeEncoderConfig:
    return cls(bert=BertConfig.from_dict(values["bert"]))


class KnowledgeAugmentedEncoder(nn.Module):
  """BERT + the tied MLM head; params: 'bert', 'mlm_transform', 'mlm_layer_norm',
  'mlm_output_bias'."""
  config: KnowledgeEncoderConfig
  dtype: Any = jnp.float32
  remat: RematPolicy = "none"

  @nn.compact
  def __call__(self, inputs: TokenBatch, mask_positions: jax.Array,
               deterministic: bool = True) -> jax.Array:
    """[batch, length] inputs, [batch, num_masks] positions -> [batch, num_masks, vocab] float32
    logits of the wordpiece at each position."""
    bert_config = self.config.bert
    bert = BertModel(bert_config, self.dtype, self.remat, name="bert")
    hidden = bert(inputs.token_ids, inputs.segment_ids, inputs.input_mask,
                  deterministic).sequence_output  # [batch, length, hidden]
    # [batch, masks, hidden]
    hidden = jnp.take_along_axis(hidden, mask_positions[..., None], axis=1)
    hidden = ACTIVATIONS[bert_config.hidden_act](
        dense(bert_config.hidden_size, bert_config, self.dtype, "mlm_transform")(hidden))
    hidden = layer_norm(bert_config, "mlm_layer_norm", MLP)(hidden)
    word_embeddings = nn.unbox(
        bert.variables["params"]["embeddings"]["word_embeddings"]["embedding"])
    bias = self.param("mlm_output_bias", logical(nn.initializers.zeros, VOCAB),
                      (bert_config.vocab_size,), jnp.float32)
    return jnp.einsum("bmh,vh->bmv", hidden.astype(self.dtype), word_embeddings.astype(self.dtype),
                      preferred_element_type=jnp.float32) + bias  # [batch, masks, vocab]


def init_params(config: KnowledgeEncoderConfig, rng: jax.Array,
                bert_params: dict[str, Any] | None = None,
                head_params: dict[str, Any] | None = None) -> dict[str, Any]:
  """The encoder's params, boxed with their logical axes: BERT from `bert_params` and the head
  from `head_params` (e.g. `mlm_head_params`) where given, freshly initialised otherwise."""
  dummy = TokenBatch(*(jnp.zeros((1, 8), jnp.int32) for _ in range(3)))
  params = dict(initial_params(KnowledgeAugmentedEncoder(config), rng, dummy,
                               jnp.zeros((1, 1), jnp.int32)))
  if bert_params is not None:
    params["bert"] = with_bert_params(params["bert"], bert_params, config.bert)
  if head_params is not None:
    params.update({name: partitioning.with_values(params[name], jax.tree.map(jnp.asarray, value))
                   for name, value in head_params.items()})
  return params


def mlm_head_params(head_tensors: dict[str, np.ndarray], config: BertConfig,
                    source: str = "") -> dict[str, Any] | None:
  """The MLM head of a Hugging Face checkpoint's `cls.predictions.*` tensors (`HFBert.
  head_tensors`) as our params, or None when it has none. The decoder weight is tied to the
  word embeddings, so only the transform and the output bias are read."""
  prefix = "cls.predictions."
  if not any(name.startswith(prefix) for name in head_tensors):
    return None
  # Each tensor's names, newest first (old checkpoints name LayerNorm's gamma and beta).
  names = dict(kernel=("transform.dense.weight",), bias=("transform.dense.bias",),
               scale=("transform.LayerNorm.weight", "transform.LayerNorm.gamma"),
               ln_bias=("transform.LayerNorm.bias", "transform.LayerNorm.beta"),
               output_bias=("bias",))
  found = {key: next((prefix + name for name in options if prefix + name in head_tensors), None)
           for key, options in names.items()}
  missing = [prefix + names[key][0] for key, name in found.items() if name is None]
  if missing:
    raise InputError(f"the MLM head lacks {missing}", path=source)
  tensor = lambda key: np.asarray(head_tensors[found[key]], np.float32)
  params = dict(mlm_transform=dict(kernel=tensor("kernel").T, bias=tensor("bias")),
                mlm_layer_norm=dict(scale=tensor("scale"), bias=tensor("ln_bias")),
                mlm_output_bias=tensor("output_bias"))
  hidden, vocab = config.hidden_size, config.vocab_size
  if params["mlm_transform"]["kernel"].shape != (hidden, hidden) or (
      params["mlm_output_bias"].shape != (vocab,)):
    raise InputError(f"the MLM head does not fit hidden size {hidden} and vocabulary {vocab}",
                     path=source)
  return params


def pretrained_init_params(config: KnowledgeEncoderConfig, rng: jax.Array,
                           pretrained: HFBert | None, source: str) -> dict[str, Any]:
  """The encoder's boxed params from a checkpoint read by `hf_import` (`source` names it): its
  BERT, and its MLM head, or a fresh head (with a warning) when it has none (MiniLM); all fresh
  when `pretrained` is None (--from_scratch)."""
  if pretrained is None:
    return init_params(config, rng)
  head = mlm_head_params(pretrained.head_tensors, pretrained.config, source)
  if head is None:
    logging.warning("%s has no MLM head (cls.predictions): the head starts freshly initialised "
                    "on the tied word embeddings", source)
  return init_params(config, rng, pretrained.params, head)

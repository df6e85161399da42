"""The dual-encoder retriever: BERT -> pooled vector -> dense(128) -> LayerNorm (-> dropout).

Queries and blocks have their own BERT (the ORQA paper) or share one (the reference code):
`share_encoders`. Relevance is the inner product of the two embeddings.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from orqa_realm.core.config import setting
from orqa_realm.data.blocks import BlockFormat, check_block_format
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.modeling import partitioning
from orqa_realm.modeling.bert import (BertBacked, BertConfig, BertModel, RematPolicy, dense,
                                      initial_params, layer_norm, mean_pool, with_bert_params)

Pooling = Literal["pooled", "cls", "mean"]
Tower = Literal["query", "block"]


@dataclasses.dataclass(frozen=True)
class RetrieverConfig(BertBacked):
  """The retriever: its architecture and how it reads queries and blocks.

  Everything here is saved with a run and an index version, and read back by whoever uses their
  checkpoints or embeddings (embed, evaluate, the refresher, warm starts, ORQA), so that a query
  encoder is never used with settings other than those it was trained or indexed with.

  `bert` is the encoder architecture: None in a task's settings, where it is read from --bert's
  config.json when the task starts (`with_bert`).
  """
  bert: BertConfig | None = None
  projection_size: int = setting(
      128, "Retrieval embedding size after dense + LayerNorm; 0: no projection.")
  pooling: Pooling = setting(
      "pooled", "Vector a tower projects: BERT's pooler output on [CLS] (ORQA), the raw [CLS] "
      "state, or the mean over tokens (how sentence-transformers models such as MiniLM were "
      "trained).")
  share_encoders: bool = setting(
      False, "One BERT for queries and blocks (the ORQA reference code) instead of two (the "
      "paper).")
  block_format: BlockFormat = setting(
      "pair", "Block input: 'pair' = [CLS] title [SEP] text [SEP] with the text as segment 1 "
      "(ORQA); 'joined' = [CLS] title text [SEP] in one segment (sentence-transformers, BEIR).")
  normalize: bool = setting(
      False, "L2-normalise query and block embeddings (cosine scores), as sentence-transformers "
      "models such as all-MiniLM-L6-v2 do.", flag="normalize_embeddings")
  query_length: int = setting(64, "Wordpieces per query, [CLS] and [SEP] included.")
  block_length: int = setting(
      288, "Wordpieces per encoded block, title and special tokens included.")
  score_scale: float = setting(
      1.0, "Multiplies question . block scores in the training losses and in ORQA's span "
      "scores: an inverse temperature. 1 for ORQA's inner-product retriever; about 20 for a "
      "cosine one (--normalize_embeddings), whose scores lie in [-1, 1] and would otherwise "
      "give a nearly flat softmax. Rankings are unchanged.", flag="retrieval_score_scale")

  def __post_init__(self):
    if self.pooling not in typing.get_args(Pooling):
      raise ValueError(f"pooling {self.pooling!r} is not one of {typing.get_args(Pooling)}")
    check_block_format(self.block_format)

  @property
  def embedding_size(self) -> int:
    return self.projection_size or self.bert.hidden_size


# The settings that make a retriever another model, and those that only say how it reads its
# inputs (which a task warm-started from a run may change).
ARCHITECTURE_FIELDS = ("bert", "projection_size", "pooling", "share_encoders", "block_format",
                       "normalize")
INPUT_FIELDS = ("query_length", "block_length", "score_scale")
ALL_FIELDS = ARCHITECTURE_FIELDS + INPUT_FIELDS
# What block embeddings depend on besides the weights: a question encoder trained against an
# index searches any corpus embedded alike (ORQA's fixed fields; growing an index).
BLOCK_ENCODER_FIELDS = ARCHITECTURE_FIELDS + ("block_length",)


class EncoderTower(nn.Module):
  """One tower: BERT, pooling and the optional projection with LayerNorm."""
  config: RetrieverConfig
  dtype: Any = jnp.float32
  remat: RematPolicy = "none"

  @nn.compact
  def __call__(self, batch: TokenBatch, deterministic: bool = True) -> jax.Array:
    """[batch, length] inputs -> [batch, embedding_size] float32 embeddings."""
    output = BertModel(self.config.bert, self.dtype, self.remat, name="bert")(
        batch.token_ids, batch.segment_ids, batch.input_mask, deterministic)
    if self.config.pooling == "pooled":
      pooled = output.pooled_output
    elif self.config.pooling == "cls":
      pooled = output.sequence_output[:, 0]
    else:
      pooled = mean_pool(output.sequence_output, batch.input_mask)
    embeddings = pooled
    if self.config.projection_size:
      projected = dense(self.config.projection_size, self.config.bert, self.dtype,
                        "projection")(pooled)
      projected = layer_norm(self.config.bert, "projection_layer_norm",
                             partitioning.MLP)(projected)
      embeddings = nn.Dropout(self.config.bert.hidden_dropout_prob)(
          projected, deterministic=deterministic)
    if self.config.normalize:
      embeddings = embeddings / jnp.maximum(
          jnp.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
    return embeddings


class DualEncoder(nn.Module):
  """Query and block towers; their params live under 'query_encoder'/'block_encoder', or under
  'encoder' when shared."""
  config: RetrieverConfig
  dtype: Any = jnp.float32
  remat: RematPolicy = "none"

  def setup(self):
    make = lambda name: EncoderTower(self.config, self.dtype, self.remat, name=name)
    if self.config.share_encoders:
      self.encoder = make("encoder")
    else:
      self.query_encoder = make("query_encoder")
      self.block_encoder = make("block_encoder")

  def embed_queries(self, queries: TokenBatch, deterministic: bool = True) -> jax.Array:
    """[batch, query_length] -> [batch, embedding_size]."""
    tower = self.encoder if self.config.share_encoders else self.query_encoder
    return tower(queries, deterministic)

  def embed_blocks(self, blocks: TokenBatch, deterministic: bool = True) -> jax.Array:
    """[batch, block_length] -> [batch, embedding_size]."""
    tower = self.encoder if self.config.share_encoders else self.block_encoder
    return tower(blocks, deterministic)

  def __call__(self, queries: TokenBatch, blocks: TokenBatch,
               deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
    return self.embed_queries(queries, deterministic), self.embed_blocks(blocks, deterministic)


def embed_in_chunks(embed: Callable[[TokenBatch, jax.Array], jax.Array], inputs: TokenBatch,
                    chunk: int, rng: jax.Array) -> jax.Array:
  """`embed(inputs, rng)` computed `chunk` rows at a time, each chunk's activations recomputed
  in the backward pass rather than kept (GradCache, Gao et al. 2021): the memory of one chunk
  plus the embeddings, so an in-batch loss can span a global batch larger than fits at once;
  the loss and its gradients are those of embedding the whole batch in one call.

  Chunk j holds rows j, j + n / chunk, ... (a strided slice), so that a batch split over the
  devices in contiguous blocks gives every device an equal share of every chunk when `chunk`
  is a multiple of the device count.

  Args:
    embed: (inputs [rows, length], dropout rng) -> [rows, dim].
    inputs: [n, length], n a multiple of `chunk`.
  Returns:
    [n, dim] in the rows' order.
  """
  num_rows = inputs.token_ids.shape[0]
  if num_rows % chunk:
    raise ValueError(f"{num_rows} rows do not split into chunks of {chunk}")
  steps = num_rows // chunk
  # [n, ...] -> [chunk, steps, ...] -> [steps, chunk, ...]: step j takes rows j, j + steps, ...
  chunked = TokenBatch(*(jnp.swapaxes(array.reshape(chunk, steps, *array.shape[1:]), 0, 1)
                         for array in inputs))
  body = jax.checkpoint(lambda args: embed(args[0], args[1]))
  embeddings = jax.lax.map(body, (chunked, jax.random.split(rng, steps)))  # [steps, chunk, d]
  return jnp.swapaxes(embeddings, 0, 1).reshape(num_rows, -1)


def tower_names(config: RetrieverConfig) -> tuple[str, ...]:
  """The top-level params entries of the retriever: one shared tower, or one per side."""
  return ("encoder",) if config.share_encoders else ("query_encoder", "block_encoder")


def tower_params(params: dict[str, Any], config: RetrieverConfig, tower: Tower) -> dict[str, Any]:
  """The part of the retriever `params` (or of a params tree holding them at its top level)
  that the query or the block tower uses."""
  name = "encoder" if config.share_encoders else f"{tower}_encoder"
  return {name: params[name]}


def init_params(config: RetrieverConfig, rng: jax.Array,
                bert_params: dict[str, Any] | None = None) -> dict[str, Any]:
  """Retriever params, boxed with their logical axes (`partitioning.unbox` for the arrays), each
  tower's BERT taken from `bert_params` (e.g. `load_hf_bert`) if given.

  The projection is always freshly initialised: pretrained checkpoints have none.
  """
  dummy = TokenBatch(*(jnp.zeros((1, 8), jnp.int32) for _ in range(3)))
  params = initial_params(DualEncoder(config), rng, dummy, dummy)
  if bert_params is not None:
    params = dict(params)
    for name in tower_names(config):
      params[name] = dict(params[name], bert=with_bert_params(params[name]["bert"], bert_params,
                                                              config.bert))
  return params


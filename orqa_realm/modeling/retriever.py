"""The dual-encoder retriever: BERT -> pooled vector -> dense(128) -> LayerNorm (-> dropout).

Queries and blocks have their own BERT (the ORQA paper) or share one (the reference code):
`share_encoders`. Relevance is the inner product of the two embeddings.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from orqa_realm.data.blocks import BLOCK_FORMATS, BlockFormat
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.modeling.bert import BertConfig, BertModel, dense, layer_norm, mean_pool

Pooling = Literal["pooled", "cls", "mean"]


@dataclasses.dataclass(frozen=True)
class RetrieverConfig:
  """The retriever's architecture.

  Attributes:
    bert: the encoder architecture.
    projection_size: size of the projected embedding (128 in ORQA); 0 keeps the pooled vector.
    pooling: "pooled" (BERT's tanh pooler on [CLS], as ORQA), "cls" (the raw [CLS] state) or
      "mean" (mean over real tokens, as sentence-transformers models such as MiniLM were trained).
    share_encoders: one BERT for queries and blocks.
    block_format: how blocks are packed into the block tower's input (`BLOCK_FORMATS`): "pair"
      as ORQA, "joined" as sentence-transformers models were trained.
    normalize: L2-normalise embeddings, so that the inner product is the cosine similarity
      (sentence-transformers models such as all-MiniLM-L6-v2 end with this step).
  """
  bert: BertConfig
  projection_size: int = 128
  pooling: Pooling = "pooled"
  share_encoders: bool = False
  block_format: BlockFormat = "pair"
  normalize: bool = False

  def __post_init__(self):
    if self.pooling not in ("pooled", "cls", "mean"):
      raise ValueError(f"pooling {self.pooling!r} is not one of 'pooled', 'cls', 'mean'")
    if self.block_format not in BLOCK_FORMATS:
      raise ValueError(f"block format {self.block_format!r} is not one of "
                       f"{sorted(BLOCK_FORMATS)}")

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready, as saved in a run's model_config.json."""
    return dict(bert=self.bert.to_dict(), projection_size=self.projection_size,
                pooling=self.pooling, share_encoders=self.share_encoders,
                block_format=self.block_format, normalize=self.normalize)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> RetrieverConfig:
    """The inverse of `to_dict`; other keys (a run's task name) are ignored."""
    return cls(bert=BertConfig.from_dict(values["bert"]), projection_size=values["projection_size"],
               pooling=values["pooling"], share_encoders=values["share_encoders"],
               block_format=values["block_format"], normalize=values["normalize"])

  @property
  def embedding_size(self) -> int:
    return self.projection_size or self.bert.hidden_size


class EncoderTower(nn.Module):
  """One tower: BERT, pooling and the optional projection with LayerNorm."""
  config: RetrieverConfig
  dtype: Any = jnp.float32
  remat: bool = False

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
      projected = layer_norm(self.config.bert, "projection_layer_norm")(projected)
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
  remat: bool = False

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


def tower_names(config: RetrieverConfig) -> tuple[str, ...]:
  return ("encoder",) if config.share_encoders else ("query_encoder", "block_encoder")


def init_params(config: RetrieverConfig, rng: jax.Array,
                bert_params: dict[str, Any] | None = None) -> dict[str, Any]:
  """Retriever params, each tower's BERT taken from `bert_params` (e.g. `load_hf_bert`) if given.

  The projection is always freshly initialised: pretrained checkpoints have none.
  """
  dummy = TokenBatch(*(jnp.zeros((1, 8), jnp.int32) for _ in range(3)))
  params = DualEncoder(config).init(rng, dummy, dummy)["params"]
  if bert_params is not None:
    shapes = lambda tree: jax.tree.map(jnp.shape, tree)
    expected = shapes(params[tower_names(config)[0]]["bert"])
    if shapes(bert_params) != expected:
      raise ValueError("the BERT params do not fit the retriever's BERT architecture "
                       f"{config.bert}")
    params = dict(params)
    for name in tower_names(config):
      tower = dict(params[name])
      tower["bert"] = jax.tree.map(jnp.asarray, bert_params)
      params[name] = tower
  return params

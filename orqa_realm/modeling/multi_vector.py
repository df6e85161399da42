"""Multi-vector retrievers: a query and a block each become a set of vectors, scored by
`late_interaction`. Three kinds, from one vector a side (the dual encoder, BERT_DOT) towards
full interaction (the cross-encoder, BERT_CAT):

- ColBERT (Khattab and Zaharia 2020): every output position of BERT, projected to `dim` by a
  linear map without bias and L2-normalised; a query is [MASK]-augmented to its full length, a
  block's punctuation is skipped (`data/multi_vector_inputs.py`); MaxSim scores.
- ME-BERT (Luan et al. 2021): a block is its first m projected output vectors ([CLS] first),
  a query its projected [CLS]; the score is the best inner product of the query with them.
- Poly-encoder (Humeau et al. 2020), the block as its "context": m learned codes attend over
  the block's output vectors, giving m vectors; the query's projected [CLS] attends over those
  and scores their attention-weighted sum. Block vectors do not depend on the query, so they
  are indexed like the others.

One BERT reads both sides (ColBERT's and ME-BERT's choice; the markers after [CLS] tell it which
side it reads). A query set and a block set are `VectorSet`s whose mask says which vectors
count, so every kind is searched by the same index code with its own score function.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import BlockFormat, check_block_format
from orqa_realm.data.multi_vector_inputs import VectorInputs
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.modeling import late_interaction
from orqa_realm.modeling.late_interaction import VectorSet
from orqa_realm.modeling.bert import (BertBacked, BertConfig, BertModel, RematPolicy,
                                      initial_params, with_bert_params)
from orqa_realm.modeling.partitioning import EMBED, MLP, logical

# Where a run that trains a multi-vector retriever keeps its settings in its model description.
MULTI_VECTOR = "multi_vector"


@dataclasses.dataclass(frozen=True)
class MultiVectorConfig(BertBacked):
  """What every multi-vector retriever shares: saved with a run and an index version, and read
  back by whoever uses them. `bert` is None in a task's settings, read from --bert when the task
  starts (`with_bert`); `kind` is the subclass's."""
  kind: ClassVar[str]
  bert: BertConfig | None = None
  dim: int = setting(128, "Size of every query and block vector (a linear projection of BERT's "
                     "outputs).", flag="colbert_dim")
  query_length: int = setting(
      32, "Wordpieces per query, [CLS], the [Q] marker and [SEP] included.")
  block_length: int = setting(
      180, "Wordpieces per block, [CLS], the [D] marker, title and [SEP] included.")
  block_format: BlockFormat = setting(
      "joined", "Block input: 'joined' = [CLS] title text [SEP]; 'pair' = [CLS] title [SEP] "
      "text [SEP] (ORQA).")
  markers: bool = setting(
      True, "Insert ColBERT's [Q] / [D] markers ([unused0] / [unused1]) after [CLS].",
      flag="side_markers")
  normalize: bool = setting(True, "L2-normalise every vector.", flag="normalize_embeddings")
  score_scale: float = setting(
      1.0, "Multiplies scores in the training losses: an inverse temperature. Rankings are "
      "unchanged.", flag="retrieval_score_scale")

  def __post_init__(self):
    check_block_format(self.block_format)
    # [CLS], [SEP] and the marker; a block in the pair format has a second [SEP].
    reserved = dict(query_length=2 + int(self.markers),
                    block_length=2 + int(self.markers) + int(self.block_format == "pair"))
    for name, count in reserved.items():
      if getattr(self, name) <= count:
        raise InputError(f"--{name}={getattr(self, name)} leaves no room for wordpieces",
                         field=name)
    if self.dim < 1:
      raise InputError(f"--colbert_dim={self.dim} must be positive", field="colbert_dim")

  @property
  def query_vectors(self) -> int | None:
    """Vectors per query: one ([CLS]) unless the kind keeps every position (None)."""
    return 1

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready, as saved with a run and an index version; `kind` says which class."""
    return dict(super().to_dict(), kind=self.kind)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> MultiVectorConfig:
    """The inverse of `to_dict`: a config of the class its `kind` names, whichever class reads
    it."""
    values = dict(values)
    kind = values.pop("kind")
    if kind not in CONFIGS:
      raise ValueError(f"multi-vector kind {kind!r} is not one of {sorted(CONFIGS)}")
    # BertBacked's from_dict, building the class `kind` names.
    return super(MultiVectorConfig, CONFIGS[kind]).from_dict(values)


@dataclasses.dataclass(frozen=True)
class ColBERTConfig(MultiVectorConfig):
  """ColBERT: a vector per token, MaxSim."""
  kind: ClassVar[str] = "colbert"
  query_augmentation: bool = setting(
      True, "Pad queries with [MASK] to --query_length, each a query vector (ColBERT's query "
      "augmentation); otherwise only real query tokens are vectors.")
  skip_punctuation: bool = setting(
      True, "Leave blocks' punctuation wordpieces out of their vectors (ColBERT's skiplist).")

  @property
  def query_vectors(self) -> int | None:
    return None


@dataclasses.dataclass(frozen=True)
class MEBERTConfig(MultiVectorConfig):
  """ME-BERT: a block's first m vectors, one query vector, max."""
  kind: ClassVar[str] = "me_bert"
  num_vectors: int = setting(8, "Vectors per block: the first m output positions ([CLS] first).",
                             flag="block_vectors")
  score_scale: float = setting(
      20.0, "Multiplies scores in the training losses: an inverse temperature (cosine scores "
      "lie in [-1, 1]).", flag="retrieval_score_scale")

  def __post_init__(self):
    super().__post_init__()
    if not 1 <= self.num_vectors <= self.block_length:
      raise InputError(f"--block_vectors={self.num_vectors} must be between 1 and the block "
                       f"length {self.block_length}", field="block_vectors")


@dataclasses.dataclass(frozen=True)
class PolyEncoderConfig(MultiVectorConfig):
  """Poly-encoder: m learned codes attend over a block; the query attends over the m results."""
  kind: ClassVar[str] = "poly_encoder"
  num_vectors: int = setting(16, "Learned codes, each giving one block vector.",
                             flag="block_vectors")
  # Unnormalised: the query's attention over the block's vectors needs logits of any size.
  normalize: bool = setting(False, "L2-normalise every vector.", flag="normalize_embeddings")
  code_init_std: float = setting(
      0.0, "Standard deviation of the codes' normal initialisation; 0: BERT's "
      "initializer_range. Codes that small attend almost uniformly, get almost the same "
      "gradient and stay one vector; larger ones start on different tokens.",
      flag="poly_code_init_std")

  def __post_init__(self):
    super().__post_init__()
    if self.num_vectors < 1:
      raise InputError(f"--block_vectors={self.num_vectors} must be positive",
                       field="block_vectors")
    if self.code_init_std < 0:
      raise InputError(f"--poly_code_init_std={self.code_init_std} must be >= 0",
                       field="poly_code_init_std")


CONFIGS: dict[str, type[MultiVectorConfig]] = {
    config.kind: config for config in (ColBERTConfig, MEBERTConfig, PolyEncoderConfig)}


def _normalized(vectors: jax.Array) -> jax.Array:
  return vectors / jnp.maximum(jnp.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


class MultiVectorEncoder(nn.Module):
  """BERT and the kind's head: `encode_queries` and `encode_blocks` give `VectorSet`s (float32
  vectors), `__call__` both."""
  config: MultiVectorConfig
  dtype: Any = jnp.float32
  remat: RematPolicy = "none"

  def setup(self):
    config = self.config
    self.bert = BertModel(config.bert, self.dtype, self.remat)
    # ColBERT's projection has no bias; for the others it does no harm to follow it.
    self.projection = nn.Dense(config.dim, use_bias=False, dtype=self.dtype,
                               kernel_init=logical(nn.initializers.normal(
                                   config.bert.initializer_range), EMBED, MLP))
    if isinstance(config, PolyEncoderConfig):
      self.codes = self.param("codes", logical(nn.initializers.normal(
          config.code_init_std or config.bert.initializer_range), None, EMBED),
                              (config.num_vectors, config.bert.hidden_size))

  def _hidden(self, inputs: VectorInputs, deterministic: bool) -> jax.Array:
    tokens = inputs.tokens
    return self.bert(tokens.token_ids, tokens.segment_ids, tokens.input_mask,
                     deterministic).sequence_output  # [batch, length, hidden]

  def _vectors(self, hidden: jax.Array) -> jax.Array:
    vectors = self.projection(hidden).astype(jnp.float32)
    return _normalized(vectors) if self.config.normalize else vectors

  def encode_queries(self, inputs: VectorInputs, deterministic: bool = True) -> VectorSet:
    """[batch, query_length] inputs -> [batch, n, dim] vectors: every position (ColBERT) or
    [CLS] (n = 1)."""
    hidden = self._hidden(inputs, deterministic)
    if self.config.query_vectors is None:
      return VectorSet(self._vectors(hidden), inputs.vector_mask)
    return VectorSet(self._vectors(hidden[:, :1]), jnp.ones(hidden.shape[:1] + (1,), jnp.int32))

  def encode_blocks(self, inputs: VectorInputs, deterministic: bool = True) -> VectorSet:
    """[batch, length] inputs -> [batch, n, dim] vectors: every position (ColBERT, n =
    length), the first m (ME-BERT) or m attended by the codes (poly-encoder)."""
    config = self.config
    hidden = self._hidden(inputs, deterministic)
    if isinstance(config, ColBERTConfig):
      return VectorSet(self._vectors(hidden), inputs.vector_mask)
    if isinstance(config, MEBERTConfig):
      m = config.num_vectors
      # A batch padded shorter than m (short blocks) has no vectors past its length.
      pad = max(m - hidden.shape[1], 0)
      first = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))[:, :m]
      mask = jnp.pad(inputs.tokens.input_mask, ((0, 0), (0, pad)))[:, :m]
      return VectorSet(self._vectors(first), mask)
    # Poly-encoder: code i's vector is sum_j softmax_j(c_i . h_j) h_j over the block's tokens.
    logits = jnp.einsum("mh,blh->bml", self.codes.astype(jnp.float32),
                        hidden.astype(jnp.float32))  # [batch, m, length]
    real = inputs.tokens.input_mask[:, None, :] != 0
    weights = jax.nn.softmax(jnp.where(real, logits, -1e30), axis=-1)
    attended = jnp.einsum("bml,blh->bmh", weights, hidden.astype(jnp.float32))
    return VectorSet(self._vectors(attended.astype(hidden.dtype)),
                     jnp.ones(hidden.shape[:1] + (config.num_vectors,), jnp.int32))

  def __call__(self, queries: VectorInputs, blocks: VectorInputs,
               deterministic: bool = True) -> tuple[VectorSet, VectorSet]:
    return self.encode_queries(queries, deterministic), self.encode_blocks(blocks, deterministic)


def scores(config: MultiVectorConfig, queries: VectorSet, blocks: VectorSet) -> jax.Array:
  """[q] query sets x [n] block sets -> [q, n] float32 relevance scores (unscaled)."""
  if isinstance(config, PolyEncoderConfig):
    return late_interaction.poly_attention_score(queries.vectors[:, 0], blocks.vectors,
                                                 blocks.mask)
  return late_interaction.maxsim(queries.vectors, queries.mask, blocks.vectors, blocks.mask)


def paired_scores(config: MultiVectorConfig, queries: VectorSet, candidates: VectorSet
                  ) -> jax.Array:
  """[b] query sets x their own [b, c] candidate sets ([b x c, n, dim] rows, query by query)
  -> [b, c] scores."""
  num_queries = queries.vectors.shape[0]
  vectors = candidates.vectors.reshape(num_queries, -1, *candidates.vectors.shape[1:])
  mask = candidates.mask.reshape(num_queries, -1, candidates.mask.shape[-1])
  if isinstance(config, PolyEncoderConfig):
    one_each = jax.vmap(lambda query, blocks, block_mask: late_interaction.poly_attention_score(
        query[None], blocks, block_mask)[0])
    return one_each(queries.vectors[:, 0], vectors, mask)
  return late_interaction.paired_maxsim(queries.vectors, queries.mask, vectors, mask)


def init_params(config: MultiVectorConfig, rng: jax.Array,
                bert_params: dict[str, Any] | None = None) -> dict[str, Any]:
  """Params boxed with their logical axes: the head freshly initialised, BERT from
  `bert_params` (e.g. `load_hf_bert`) if given."""
  tokens = jnp.zeros((1, 8), jnp.int32)
  dummy = VectorInputs(TokenBatch(tokens, tokens, tokens), tokens)
  params = initial_params(MultiVectorEncoder(config), rng, dummy, dummy)
  if bert_params is not None:
    params = dict(params, bert=with_bert_params(params["bert"], bert_params, config.bert))
  return params

"""REALM pretraining (Guu et al. 2020): masked-language modelling marginalised over retrieved
documents, with the retriever trained through the marginal and its index refreshed
asynchronously.

    python -m orqa_realm.preprocess --salient_spans --output_dir=runs/blocks/squad_demo
    python -m orqa_realm.train --flagfile=configs/realm_demo.cfg

Each step, for every query of the global batch:

1. `train_batch` (before the step): a sentence of the corpus with one salient span masked
   (`--realm_masking`, `data/realm.py`) is embedded with the parameters the step starts from and
   searched in the newest loaded index version (built by the refresher from an earlier
   checkpoint: stale). Blocks of the query's own document are removed, and the candidates are
   the null document (empty body, always candidate 0) + the best k - 1 remaining blocks
   (`--realm_num_candidates`, k = 8).
2. `loss` (the jitted step): the query and the k candidates are embedded again with the current
   parameters, so that both encoders get gradients through log p(z | x); the
   knowledge-augmented encoder (`modeling/mlm.py`) reads `[CLS] masked query [SEP] document
   [SEP]` for each candidate; the loss is `losses.realm_loss` (`--realm_marginal=token|span`).

The loop logs the loss, the retrieval utility (log-likelihood of the span reading the best
retrieved document minus reading the null document: positive when retrieval helps), p(null),
the masked-wordpiece accuracy, and the index version with its staleness in steps.

Each evaluation scores the sentences of a held-out fraction of the store's documents
(`--realm_heldout_fraction`, never queries in training) as training scores its queries, through
the index version training uses: their masked wordpieces' log-likelihood and accuracy with
retrieval (marginalised over the candidates) and reading the null document alone, and the
held-out retrieval utility, the difference per masked wordpiece with its 95% confidence
interval over the held-out queries. Retrieval helps on held-out text when it is above zero.

The retriever's params sit at the top level of the params, as in an ICT or DPR run, beside
'knowledge_encoder', so that `embed`, the refresher and ORQA (`--retriever_workdir`) read a REALM
checkpoint as they read any retriever run; ORQA also starts its reader from the knowledge
encoder's BERT (REALM's fine-tuning).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from orqa_realm.core.config import nested, setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.masking import Masking
from orqa_realm.core import parallel
from orqa_realm.data.realm import (KNOWLEDGE_LENGTH_MULTIPLE, REALMQuery, knowledge_inputs,
                                   masked_examples)
from orqa_realm.data.qa import question_indices
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.encode import embedding, runs
from orqa_realm.index.handle import LoadedIndex
from orqa_realm.modeling import mlm, retriever
from orqa_realm.modeling.losses import REALMQueryScores, realm_loss, realm_query_scores
from orqa_realm.modeling.mlm import KNOWLEDGE_ENCODER
from orqa_realm.tasks.base import Need, SavedRetriever, StepContext, Task, TaskContext
from orqa_realm.tasks.common import (RetrieverTaskConfig, batch_length_multiple,
                                     check_warm_start, own_retriever, saved_retriever_of,
                                     with_store_path)


class REALMBatch(NamedTuple):
  queries: TokenBatch  # [batch, query_length] the masked query, for the query encoder
  retrieved: TokenBatch  # [batch, k - 1, block_length] the retrieved blocks, for the block tower
  knowledge_inputs: TokenBatch  # [batch, k, length] [CLS] query [SEP] document [SEP]
  mask_positions: np.ndarray  # [batch, max_masks] int32 positions in knowledge_inputs
  targets: np.ndarray  # [batch, max_masks] int32
  target_mask: np.ndarray  # [batch, max_masks] bool
  candidates: np.ndarray  # [batch, k] int32 block ids, -1 (the null document) first


@dataclasses.dataclass(frozen=True)
class REALMConfig(RetrieverTaskConfig):
  """The settings of REALM pretraining."""
  # REALM's queries are sentences with a masked span: 96 wordpieces in the reference.
  retriever: retriever.RetrieverConfig = nested(retriever.RetrieverConfig(query_length=96))
  masking: Masking = setting(
      "salient", "What REALM masks in a query sentence: one salient span (named entity or "
      "date), random wordpieces, or a random span of whole words.", flag="realm_masking")
  max_masks: int = setting(10, "Most wordpieces masked in a REALM query.")
  num_candidates: int = setting(
      8, "k: documents the knowledge-augmented encoder reads per query, the null document "
      "included.", flag="realm_num_candidates")
  null_document: bool = setting(
      True, "Whether the null document is a candidate of the marginal (REALM's choice: a query "
      "that no document helps can still be predicted). Without it the knowledge encoder still "
      "reads it, for the held-out comparison, but its retrieval probability is zero.",
      flag="realm_null_document")
  marginal: Literal["token", "span"] = setting(
      "token", "Marginalise over documents each masked wordpiece alone (REALM's code) or the "
      "span's wordpieces jointly (REALM's paper).", flag="realm_marginal")
  document_length: int = setting(
      288, "Document wordpieces (and its [SEP]) in the knowledge-augmented encoder's input, "
      "after the query.", flag="realm_document_length")
  heldout_fraction: float = setting(
      0.05, "Fraction of the store's documents whose sentences are held out of training, for "
      "each evaluation's held-out masked-span scores.", flag="realm_heldout_fraction")
  eval_batches: int = setting(
      4, "Held-out batches (of the training batch size) per evaluation.",
      flag="realm_eval_batches")
  knowledge_workdir: str = setting(
      "", "An mlm (or REALM) run whose newest checkpoint the knowledge-augmented encoder and "
      "its MLM head start from; empty: --bert's weights (and its head, or a fresh one).")

  def __post_init__(self):
    if not 0 <= self.heldout_fraction < 1:
      raise InputError(f"must be in [0, 1), not {self.heldout_fraction}",
                       field="realm_heldout_fraction")


def retriever_params(params: dict[str, Any]) -> dict[str, Any]:
  """The retriever part of REALM params (everything but the knowledge encoder)."""
  return {name: value for name, value in params.items() if name != KNOWLEDGE_ENCODER}


def remove_source_document(ranking: np.ndarray, documents: np.ndarray, source_document: int,
                           count: int) -> np.ndarray:
  """The first `count` blocks of `ranking` whose document is not `source_document`: the query
  sentence's own document would make retrieval trivial."""
  kept = ranking[documents[ranking] != source_document][:count]
  if len(kept) < count:
    raise ValueError(f"only {len(kept)} blocks outside the query's document among the "
                     f"{len(ranking)} retrieved; {count} are needed")
  return kept


# A retrieval logit whose candidate gets no probability (the null document, when it is off).
NO_PROBABILITY = -1e9


def heldout_metrics(scores: REALMQueryScores) -> dict[str, float]:
  """Held-out evaluation from each query's scores: per masked wordpiece, the loss and accuracy
  with retrieval and with the null document alone, and the retrieval utility (log-likelihood
  with retrieval minus without, per masked wordpiece of each query, averaged over queries) with
  the half-width of its 95% confidence interval (normal approximation)."""
  masks = float(np.sum(scores.num_masks))
  per_query = ((scores.log_likelihood - scores.null_log_likelihood)
               / np.maximum(scores.num_masks, 1.0))  # [queries]
  spread = float(np.std(per_query, ddof=1)) if len(per_query) > 1 else float("nan")
  return dict(heldout_loss=-float(np.sum(scores.log_likelihood)) / masks,
              heldout_null_loss=-float(np.sum(scores.null_log_likelihood)) / masks,
              heldout_masked_accuracy=float(np.sum(scores.correct)) / masks,
              heldout_null_masked_accuracy=float(np.sum(scores.null_correct)) / masks,
              heldout_retrieval_utility=float(np.mean(per_query)),
              heldout_retrieval_utility_ci95=1.96 * spread / math.sqrt(len(per_query)))


class REALMTask(Task):
  name = "realm"
  config_class = REALMConfig
  needs = frozenset({Need.PARAMS, Need.INDEX})
  accumulates_gradients = True  # a mean over masked tokens, each query's marginal its own

  def __init__(self, config: REALMConfig, context: TaskContext):
    if config.num_candidates < 2:
      raise InputError("REALM needs the null document and at least one retrieved one: "
                       "--realm_num_candidates >= 2", field="realm_num_candidates")
    check_warm_start(config)
    self.store, self.tokenizer = config.source.open_store()
    self.config = dataclasses.replace(with_store_path(config, self.store),
                                      retriever=own_retriever(config.retriever, config.source))
    self.context = context
    self.knowledge_config = mlm.KnowledgeEncoderConfig(config.source.bert_config())
    retriever_config = self.config.retriever
    self.examples, self.eval_examples = masked_examples(
        self.store, self.tokenizer, config.masking, max_masks=config.max_masks,
        query_length=retriever_config.query_length, heldout_fraction=config.heldout_fraction,
        with_heldout=config.eval_batches > 0, seed=context.seed)
    logging.info("REALM: %d %s-masking examples per epoch, %d held out", len(self.examples),
                 config.masking, len(self.eval_examples) if self.eval_examples else 0)
    dtype = jnp.dtype(context.dtype)
    self.retriever_model = retriever.DualEncoder(retriever_config, dtype, context.remat)
    self.knowledge_model = mlm.KnowledgeAugmentedEncoder(self.knowledge_config, dtype,
                                                         context.remat)
    self.block_documents = np.asarray(self.store.document_indices())
    self.max_document_blocks = int(np.bincount(self.block_documents).max())
    if len(self.store) - self.max_document_blocks < config.num_candidates - 1:
      raise InputError(f"the store has too few blocks for {config.num_candidates - 1} retrieved "
                       "candidates outside a query's document", path=config.source.block_store)
    # The null document's block-tower input: an empty title and body.
    self.null_block = self.store.pack_blocks([[]], [[]], max_length=8,
                                             block_format=retriever_config.block_format)
    self._heldout_scorers: dict[Any, Any] = {}  # mesh -> jitted held-out scoring

  @classmethod
  def saved_retriever(cls, config: REALMConfig) -> SavedRetriever | None:
    return saved_retriever_of(config)

  def run_model(self) -> dict[str, Any]:
    return dict(runs.retriever_model(self.config.retriever, self.tokenizer.fingerprint),
                **{KNOWLEDGE_ENCODER: self.knowledge_config.to_dict()})

  @functools.cached_property
  def pretrained(self):
    """--bert's weights and MLM head (None with --from_scratch), read when first needed: the
    knowledge encoder's start and, without --retriever_workdir, the retriever's BERT."""
    return self.config.source.pretrained()

  def init_params(self, rng: jax.Array) -> dict[str, Any]:
    retriever_rng, knowledge_rng = jax.random.split(rng)
    pretrained = self.pretrained
    params = dict(retriever.init_params(self.config.retriever, retriever_rng,
                                        pretrained.params if pretrained else None))
    params[KNOWLEDGE_ENCODER] = mlm.pretrained_init_params(
        self.knowledge_config, knowledge_rng, pretrained, self.config.source.bert_dir())
    return params

  def warm_start(self, params: dict[str, Any], mesh) -> dict[str, Any]:
    """The retriever from the newest checkpoint of --retriever_workdir (REALM starts from ICT),
    the knowledge encoder from --knowledge_workdir's (an mlm run's trained head); each as
    `init_params` made it otherwise."""
    knowledge = params[KNOWLEDGE_ENCODER]
    if self.config.knowledge_workdir:
      knowledge = runs.restore_knowledge_encoder(self.config.knowledge_workdir,
                                                 self.knowledge_config,
                                                 self.tokenizer.fingerprint, mesh)
    if self.config.retriever_workdir:
      params = runs.restore_latest_retriever(
          runs.open_retriever_run(self.config.retriever_workdir), mesh)
    return dict(retriever_params(params), **{KNOWLEDGE_ENCODER: knowledge})

  def candidates(self, queries: list[REALMQuery], query_embeddings: np.ndarray,
                 index: LoadedIndex, rows: slice = slice(None)) -> np.ndarray:
    """[rows, k] int32: the null document (-1), then the best k - 1 blocks of `index` outside
    each query's document, for `queries`, rows `rows` of the global batch whose embeddings are
    `query_embeddings` ([batch, dim]: the search takes every host's queries)."""
    count = self.config.num_candidates - 1
    depth = min(count + self.max_document_blocks, index.searcher.num_rows)
    rankings = index.searcher.search(query_embeddings, depth).ids[rows]  # [rows, depth]
    retrieved = np.stack([remove_source_document(ranking, self.block_documents, query.document,
                                                 count)
                          for query, ranking in zip(queries, rankings)])
    return np.concatenate([np.full((len(queries), 1), -1), retrieved], axis=1).astype(np.int32)

  def train_batch(self, step: int, context: StepContext) -> REALMBatch:
    return self.batch_of(self.examples.batch(step, self.context.batch_size, context.rows),
                         context.params, context.index, context.mesh, context.rows)

  def batch_of(self, queries: list[REALMQuery], params, index: LoadedIndex, mesh,
               rows: slice = slice(None)) -> REALMBatch:
    """The batch of `queries` (rows `rows` of the global batch), their candidates retrieved
    from `index` with the query tower of `params`."""
    config = self.config.retriever
    query_tokens = self.store.pack([query.masked.token_ids for query in queries],
                                   max_length=config.query_length)
    query_embeddings = embedding.embed_query_tokens(
        retriever_params(params), query_tokens, config,
        dtype=jnp.dtype(self.context.dtype), mesh=mesh)  # [batch, dim]
    candidates = self.candidates(queries, query_embeddings, index, rows)  # [rows, k]
    retrieved = self.store.encode(candidates[:, 1:].ravel(), max_length=config.block_length,
                                  block_format=config.block_format)
    knowledge_length = config.query_length + self.config.document_length
    knowledge = knowledge_inputs(
        self.store, queries, candidates, max_query_length=config.query_length,
        max_document_length=self.config.document_length, max_masks=self.config.max_masks,
        length_multiple=batch_length_multiple(KNOWLEDGE_LENGTH_MULTIPLE, knowledge_length))
    per_query = lambda array: array.reshape(len(queries), -1, *array.shape[1:])
    return REALMBatch(query_tokens, TokenBatch(*(per_query(array) for array in retrieved)),
                      knowledge.tokens, knowledge.mask_positions, knowledge.targets,
                      knowledge.target_mask, candidates)

  def loss_weight(self, batch: REALMBatch) -> jax.Array:
    return jnp.sum(batch.target_mask.astype(jnp.float32))  # the masked tokens

  def query_scores(self, params, batch: REALMBatch, rng, deterministic: bool
                   ) -> REALMQueryScores:
    """Each query's masked wordpieces scored with retrieval and with the null document alone
    (`losses.realm_query_scores`)."""
    return realm_query_scores(*self.logits(params, batch, rng, deterministic), batch.targets,
                              batch.target_mask, self.config.marginal)

  def logits(self, params, batch: REALMBatch, rng, deterministic: bool
             ) -> tuple[jax.Array, jax.Array]:
    """([batch, k] retrieval logits of the candidates, [batch, k, masks, vocab] the knowledge
    encoder's logits at the masks reading each), both towers and the encoder applied."""
    query_rng, block_rng, knowledge_rng = jax.random.split(rng, 3)
    batch_size, retrieved_count, block_length = batch.retrieved.token_ids.shape
    tower_params = {"params": retriever_params(params)}
    query_embeddings = self.retriever_model.apply(
        tower_params, batch.queries, deterministic, method=retriever.DualEncoder.embed_queries,
        rngs={"dropout": query_rng})  # [batch, dim]
    flat_retrieved = TokenBatch(*(array.reshape(batch_size * retrieved_count, block_length)
                                  for array in batch.retrieved))
    block_embeddings = self.retriever_model.apply(
        tower_params, flat_retrieved, deterministic, method=retriever.DualEncoder.embed_blocks,
        rngs={"dropout": block_rng}).reshape(batch_size, retrieved_count, -1)  # [b, k - 1, dim]
    null_embedding = self.retriever_model.apply(
        tower_params, TokenBatch(*(jnp.asarray(array) for array in self.null_block)),
        deterministic, method=retriever.DualEncoder.embed_blocks,
        rngs={"dropout": block_rng})  # [1, dim]
    candidate_embeddings = jnp.concatenate(
        [jnp.broadcast_to(null_embedding[None], (batch_size, 1, null_embedding.shape[-1])),
         block_embeddings], axis=1)  # [batch, k, dim]
    retrieval_logits = self.config.retriever.score_scale * jnp.einsum(
        "bd,bkd->bk", query_embeddings, candidate_embeddings,
        preferred_element_type=jnp.float32)  # [batch, k]
    if not self.config.null_document:
      # Finite, so that sums with log-probabilities stay finite and gradients are zero.
      retrieval_logits = retrieval_logits.at[:, 0].set(NO_PROBABILITY)

    k, length = batch.knowledge_inputs.token_ids.shape[1:]
    flat_inputs = TokenBatch(*(array.reshape(batch_size * k, length)
                               for array in batch.knowledge_inputs))
    flat_positions = jnp.repeat(batch.mask_positions, k, axis=0)  # [batch x k, masks]
    mlm_logits = self.knowledge_model.apply(
        {"params": params[KNOWLEDGE_ENCODER]}, flat_inputs, flat_positions, deterministic,
        rngs={"dropout": knowledge_rng})  # [batch x k, masks, vocab]
    return retrieval_logits, mlm_logits.reshape(batch_size, k, *mlm_logits.shape[1:])

  def loss(self, params, batch: REALMBatch, rng, deterministic: bool):
    result = realm_loss(self.query_scores(params, batch, rng, deterministic))
    return result.loss, dict(loss=result.loss, retrieval_utility=result.retrieval_utility,
                             null_probability=result.null_probability,
                             masked_accuracy=result.masked_accuracy)

  def heldout_scorer(self, mesh):
    """Jitted (params, batch) -> REALMQueryScores without dropout, replicated over `mesh` (so
    that every host reads them whole); one per mesh."""
    if mesh not in self._heldout_scorers:
      self._heldout_scorers[mesh] = jax.jit(
          lambda params, batch: self.query_scores(params, batch, jax.random.key(0), True),
          out_shardings=parallel.replicated(mesh))
    return self._heldout_scorers[mesh]

  def evaluate(self, params, mesh, index=None) -> dict[str, float]:
    """The held-out sentences' masked-span scores with retrieval (through `index`, the version
    training uses) and with the null document alone, and the held-out retrieval utility. Each
    sentence counts once, however many batches the held-out pool fills (batches cycle through
    it), so that the interval is over distinct queries. Each host builds its own rows, as in
    training."""
    if self.eval_examples is None or index is None:
      return {}
    batch_size, examples = self.context.batch_size, self.eval_examples
    rows = parallel.host_local_rows(batch_size)
    units, scores = [], []
    for step in range(self.config.eval_batches):
      batch = self.batch_of(examples.batch(step, batch_size, rows), params, index, mesh, rows)
      result = self.heldout_scorer(mesh)(params, parallel.global_from_local(batch, mesh))
      scores.append(jax.tree.map(parallel.fetch_replicated, result))
      units.append(question_indices(len(examples), batch_size, seed=examples.seed, step=step))
    _, first = np.unique(np.concatenate(units), return_index=True)
    return heldout_metrics(REALMQueryScores(*(np.concatenate(field)[first]
                                              for field in zip(*scores))))

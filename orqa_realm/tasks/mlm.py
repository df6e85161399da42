"""Masked-language-model training of REALM's knowledge-augmented encoder alone: its inputs are
REALM's reading the null document, `[CLS] masked sentence [SEP] [SEP]`, masked as REALM masks
(`--realm_masking`: a salient span, random wordpieces or a random span of whole words).

    python -m orqa_realm.train --flagfile=configs/mlm_squad_demo.cfg

What it is for: a BERT without an MLM head (MiniLM) gives REALM a fresh head, which then moves
the whole encoder while it learns (README, "Train: REALM"); this task trains the head first (and
the encoder, or not: `--frozen_parameters=^knowledge_encoder/bert/`) and REALM starts its
knowledge encoder from the run (`--knowledge_workdir`). The sentences of a held-out fraction of
the store's documents give each evaluation's masked accuracy and log-likelihood: REALM's
null-document baseline on held-out text.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from orqa_realm.core.config import check_minimum, nested, setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.masking import Masking
from orqa_realm.data.realm import (KNOWLEDGE_LENGTH_MULTIPLE, REALMQuery, knowledge_inputs,
                                   masked_examples)
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.encode import runs
from orqa_realm.modeling import mlm
from orqa_realm.modeling.losses import masked_lm_loss
from orqa_realm.tasks.base import StepContext, Task, TaskContext
from orqa_realm.tasks.common import StoreAndBert, batch_length_multiple, with_store_path


class MLMBatch(NamedTuple):
  inputs: TokenBatch  # [batch, length] [CLS] masked sentence [SEP] [SEP] (the null document)
  mask_positions: np.ndarray  # [batch, max_masks] int32 positions in `inputs`
  targets: np.ndarray  # [batch, max_masks] int32
  target_mask: np.ndarray  # [batch, max_masks] bool, False on padding slots


@dataclasses.dataclass(frozen=True)
class MLMConfig:
  """The settings of masked-LM training (REALM's masking, flags shared with --task=realm)."""
  source: StoreAndBert = nested(StoreAndBert())
  masking: Masking = setting(
      "salient", "What is masked in a sentence: one salient span (named entity or date), "
      "random wordpieces, or a random span of whole words.", flag="realm_masking")
  max_masks: int = setting(10, "Most wordpieces masked in a REALM query.")
  query_length: int = setting(
      96, "Wordpieces of the masked sentence's window, [CLS] and [SEP] included (REALM's "
      "query length).")
  heldout_fraction: float = setting(
      0.05, "Fraction of the store's documents whose sentences are held out for evaluation.",
      flag="mlm_heldout_fraction")
  eval_batches: int = setting(
      8, "Held-out batches (of the training batch size) per evaluation.",
      flag="mlm_eval_batches")

  def __post_init__(self):
    check_minimum("max_masks", self.max_masks, 1)
    check_minimum("query_length", self.query_length, 3)
    if not 0 <= self.heldout_fraction < 1:
      raise InputError(f"must be in [0, 1), not {self.heldout_fraction}",
                       field="mlm_heldout_fraction")


class MLMTask(Task):
  name = "mlm"
  config_class = MLMConfig
  trains_block_tower = False
  accumulates_gradients = True  # a mean over masked wordpieces

  def __init__(self, config: MLMConfig, context: TaskContext):
    self.store, self.tokenizer = config.source.open_store()
    self.config = with_store_path(config, self.store)
    self.context = context
    self.knowledge_config = mlm.KnowledgeEncoderConfig(config.source.bert_config())
    self.examples, self.eval_examples = masked_examples(
        self.store, self.tokenizer, config.masking, max_masks=config.max_masks,
        query_length=config.query_length, heldout_fraction=config.heldout_fraction,
        with_heldout=config.eval_batches > 0, seed=context.seed)
    logging.info("mlm: %d %s-masking training examples, %d held out", len(self.examples),
                 config.masking, len(self.eval_examples) if self.eval_examples else 0)
    self.model = mlm.KnowledgeAugmentedEncoder(self.knowledge_config, jnp.dtype(context.dtype),
                                               context.remat)

  def run_model(self) -> dict[str, Any]:
    return runs.knowledge_encoder_model(self.knowledge_config, self.tokenizer.fingerprint)

  @functools.cached_property
  def pretrained(self):
    """--bert's weights and MLM head (None with --from_scratch)."""
    return self.config.source.pretrained()

  def init_params(self, rng: jax.Array) -> dict[str, Any]:
    return {mlm.KNOWLEDGE_ENCODER: mlm.pretrained_init_params(
        self.knowledge_config, rng, self.pretrained, self.config.source.bert_dir())}

  def batch_of(self, queries: list[REALMQuery]) -> MLMBatch:
    """The null-document inputs of `queries`, padded to a multiple of 64 wordpieces (on several
    hosts, to the full length: the hosts' rows form one global array)."""
    null = np.full((len(queries), 1), -1, np.int32)
    length = self.config.query_length + 1
    inputs = knowledge_inputs(self.store, queries, null, max_query_length=self.config.query_length,
                              max_document_length=1, max_masks=self.config.max_masks,
                              length_multiple=batch_length_multiple(KNOWLEDGE_LENGTH_MULTIPLE,
                                                                    length))
    return MLMBatch(TokenBatch(*(array[:, 0] for array in inputs.tokens)), inputs.mask_positions,
                    inputs.targets, inputs.target_mask)

  def train_batch(self, step: int, context: StepContext) -> MLMBatch:
    return self.batch_of(self.examples.batch(step, self.context.batch_size, context.rows))

  def loss_weight(self, batch: MLMBatch) -> jax.Array:
    return jnp.sum(batch.target_mask.astype(jnp.float32))

  def loss(self, params, batch: MLMBatch, rng, deterministic: bool):
    logits = self.model.apply({"params": params[mlm.KNOWLEDGE_ENCODER]}, batch.inputs,
                              batch.mask_positions, deterministic,
                              rngs={"dropout": rng})  # [batch, masks, vocab]
    result = masked_lm_loss(logits, batch.targets, batch.target_mask)
    return result.loss, {"loss": result.loss, "masked_accuracy": result.accuracy}

  def eval_batches(self) -> Iterator[MLMBatch]:
    if self.eval_examples is None:
      return
    for step in range(self.config.eval_batches):
      yield self.batch_of(self.eval_examples.batch(step, self.context.batch_size))

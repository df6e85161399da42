"""Spider pretraining (Ram et al., 2022): a passage's window around a span that recurs in another
passage of its document retrieves that passage (`data/spider.py`).

The loss is DPR's: the in-batch softmax over every query's positive and its same-document
negative (a passage of the document without the span), duplicates of a query's positive
elsewhere in the batch not counted as its negatives. Blocks held out of training
(`heldout_fraction`) give the evaluation batches, their pairs formed among themselves;
`--eval_qa_dataset` adds answer recall over the whole store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from orqa_realm.core.config import nested, setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.qa import QAEvaluation
from orqa_realm.data.spider import SpiderSampler, SpiderSettings, title_groups
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.modeling.retriever import RetrieverConfig
from orqa_realm.modeling.losses import in_batch_softmax_loss
from orqa_realm.tasks.base import StepContext, TaskContext
from orqa_realm.tasks.common import DualEncoderTask, StoreAndBert
from orqa_realm.tasks.contrastive import CONTRASTIVE_RETRIEVER, check_heldout_fraction
from orqa_realm.tasks.ict import split_blocks


class SpiderInputs(NamedTuple):
  queries: TokenBatch  # [batch, query_length]
  blocks: TokenBatch  # [batch x 2, block_length]
  block_ids: np.ndarray  # [batch x 2] int


@dataclasses.dataclass(frozen=True)
class SpiderConfig:
  """The settings of Spider pretraining."""
  source: StoreAndBert = nested(StoreAndBert())
  retriever: RetrieverConfig = nested(CONTRASTIVE_RETRIEVER)
  min_span: int = setting(2, "Wordpieces of the shortest recurring span.",
                          flag="spider_min_span")
  max_span: int = setting(10, "Wordpieces of the longest recurring span.",
                          flag="spider_max_span")
  query_window: int = setting(64, "Wordpieces of a query window around its span.",
                              flag="spider_query_window")
  remove_prob: float = setting(0.5, "Probability of removing the span from its query.",
                               flag="spider_remove_prob")
  group_by: str = setting(
      "document", "What a query and its positive must share: 'document' (the store's; an "
      "article of Wikipedia), or 'title' (documents of one title, e.g. SQuAD's paragraphs of an "
      "article).", flag="spider_group_by")
  heldout_fraction: float = setting(
      0.05, "Fraction of blocks held out of training for evaluation.",
      flag="contrastive_heldout_fraction")
  eval_batches: int = setting(
      4, "Held-out batches (of the training batch size) per evaluation.",
      flag="contrastive_eval_batches")
  evaluation: QAEvaluation = nested(QAEvaluation(questions=300))

  def __post_init__(self):
    if not 1 <= self.min_span <= self.max_span:
      raise InputError(f"must be in [1, --spider_max_span={self.max_span}], not "
                       f"{self.min_span}", field="spider_min_span")
    if self.query_window < self.max_span:
      raise InputError(f"must hold a span of --spider_max_span={self.max_span}, not "
                       f"{self.query_window}", field="spider_query_window")
    if not 0.0 <= self.remove_prob <= 1.0:
      raise InputError(f"must be in [0, 1], not {self.remove_prob}", field="spider_remove_prob")
    if self.group_by not in ("document", "title"):
      raise InputError(f"must be 'document' or 'title', not {self.group_by!r}",
                       field="spider_group_by")
    check_heldout_fraction(self.heldout_fraction)

  def settings(self) -> SpiderSettings:
    return SpiderSettings(self.min_span, self.max_span, self.query_window, self.remove_prob)


class SpiderTask(DualEncoderTask):
  name = "spider"
  config_class = SpiderConfig

  def __init__(self, config: SpiderConfig, context: TaskContext):
    super().__init__(config, context)
    train_blocks, self.heldout_blocks = split_blocks(len(self.store), config.heldout_fraction,
                                                     context.seed)
    vocabulary = self.tokenizer.hf_tokenizer.convert_ids_to_tokens
    tokens = lambda token_ids: vocabulary([int(i) for i in token_ids])

    def is_content(token_ids: np.ndarray) -> bool:
      """A wordpiece that is a word (or starts one) of letters or digits, not a stopword."""
      return any(token.isalnum() and token.lower() not in ENGLISH_STOP_WORDS
                 for token in tokens(token_ids))

    groups = (self.store.document_indices() if config.group_by == "document"
              else title_groups(self.store))
    retriever_config = self.config.retriever
    sampler = lambda blocks, seed: SpiderSampler(
        self.store, batch_size=context.batch_size, settings=config.settings(), tokens=tokens,
        is_content=is_content, groups=groups, query_length=retriever_config.query_length,
        block_length=retriever_config.block_length, block_format=retriever_config.block_format,
        seed=seed, candidate_blocks=blocks)
    try:
      self.train_sampler = sampler(train_blocks, context.seed)
      self.eval_sampler = (sampler(self.heldout_blocks, context.seed + 1)
                           if config.eval_batches and len(self.heldout_blocks) else None)
    except ValueError as e:
      raise InputError(f"{e}: pass a smaller --batch_size, a larger --block_store, or (for the "
                       "held-out split) --contrastive_eval_batches=0",
                       path=self.store.directory) from e

  def train_batch(self, step: int, context: StepContext) -> SpiderInputs:
    batch = self.train_sampler.batch(step, context.rows)  # a function of the step alone
    return SpiderInputs(batch.queries, batch.blocks, batch.block_ids)

  def loss(self, params, batch: SpiderInputs, rng, deterministic: bool):
    query_embeddings, block_embeddings = self.model.apply(
        {"params": params}, batch.queries, batch.blocks, deterministic, rngs={"dropout": rng})
    result = in_batch_softmax_loss(query_embeddings, block_embeddings,
                                   self.config.retriever.score_scale, batch.block_ids)
    return result.loss, {"loss": result.loss, "accuracy": result.accuracy}

  def eval_batches(self) -> Iterator[SpiderInputs]:
    if self.eval_sampler is None:
      return
    for step in range(self.config.eval_batches):
      batch = self.eval_sampler.batch(step)
      yield SpiderInputs(batch.queries, batch.blocks, batch.block_ids)

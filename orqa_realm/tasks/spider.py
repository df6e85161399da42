"""Spider pretraining (Ram et al., 2022): a passage's window around a span that recurs in another
passage of its document retrieves that passage (`data/spider.py`).

The loss is DPR's: the in-batch softmax over every query's positive and its same-document
negative (a passage of the document without the span), duplicates of a query's positive
elsewhere in the batch not counted as its negatives. Blocks held out of training
(`--contrastive_heldout_fraction`) give the evaluation batches, their pairs formed among
themselves;
`--eval_qa_dataset` adds answer recall over the whole store.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from orqa_realm.core.config import nested, setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.qa import QAEvaluation
from orqa_realm.data.spider import SpiderSampler, SpiderSettings, title_groups
from orqa_realm.modeling.retriever import RetrieverConfig
from orqa_realm.tasks.common import StoreAndBert
from orqa_realm.tasks.contrastive import (CONTRASTIVE_RETRIEVER, HeldOutBlocks, PretrainingInputs,
                                          PretrainingTask)


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
  held_out: HeldOutBlocks = nested(HeldOutBlocks())
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

  def settings(self) -> SpiderSettings:
    return SpiderSettings(self.min_span, self.max_span, self.query_window, self.remove_prob)


class SpiderTask(PretrainingTask):
  name = "spider"
  config_class = SpiderConfig

  def make_sampler(self, blocks: np.ndarray, seed: int) -> SpiderSampler:
    vocabulary = self.tokenizer.hf_tokenizer.convert_ids_to_tokens
    tokens = lambda token_ids: vocabulary([int(i) for i in token_ids])

    def is_content(token_ids: np.ndarray) -> bool:
      """A wordpiece that is a word (or starts one) of letters or digits, not a stopword."""
      return any(token.isalnum() and token.lower() not in ENGLISH_STOP_WORDS
                 for token in tokens(token_ids))

    groups = (self.store.document_indices() if self.config.group_by == "document"
              else title_groups(self.store))
    retriever_config = self.config.retriever
    return SpiderSampler(
        self.store, batch_size=self.context.batch_size, settings=self.config.settings(),
        tokens=tokens, is_content=is_content, groups=groups,
        query_length=retriever_config.query_length, block_length=retriever_config.block_length,
        block_format=retriever_config.block_format, seed=seed, candidate_blocks=blocks)

  def inputs(self, batch) -> PretrainingInputs:
    return PretrainingInputs(batch.queries, batch.blocks, batch.block_ids)

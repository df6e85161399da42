"""Evaluation of a retriever in training: every block of the store embedded by the current
model, the held-out questions searched exactly (ICT, DPR)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orqa_realm import embed
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.qa import QAExample
from orqa_realm.data.tokenization import Tokenizer
from orqa_realm.index.exact import ExactSearcher
from orqa_realm.data.answers import answer_hits, recall_at_k
from orqa_realm.modeling.retriever import RetrieverConfig


def answer_recall_over_store(params: Any, config: RetrieverConfig, store: BlockStore,
                             tokenizer: Tokenizer, examples: Sequence[QAExample],
                             ks: Sequence[int], *, query_length: int, block_length: int, dtype,
                             mesh) -> dict[str, float]:
  """{"answer_recall@k": fraction of `examples` with an answer in their top k blocks}."""
  blocks = embed.embed_blocks(store, params, config, block_length=block_length, dtype=dtype,
                              mesh=mesh)
  queries = embed.embed_queries([example.question for example in examples], params, config,
                                tokenizer, query_length=query_length, dtype=dtype, mesh=mesh)
  depth = min(max(ks), len(store))
  ids = ExactSearcher(blocks, mesh=mesh).search(queries, depth).ids  # [questions, depth]
  recalls = recall_at_k(answer_hits(ids, store, examples), [k for k in ks if k <= depth])
  return {f"answer_recall@{k}": recall for k, recall in recalls.items()}


class StoreRecallEvaluation:
  """`Task.evaluate` for dual-encoder tasks (ICT, DPR): answer recall@k of `eval_examples` over
  the whole store. Uses the task's `store`, `tokenizer`, `eval_examples` and a `config` with
  `retriever`, `eval_recall_ks`, `query_length`, `block_length` and `dtype`."""

  def evaluate(self, params, mesh) -> dict[str, float]:
    if not self.eval_examples:
      return {}
    config = self.config
    return answer_recall_over_store(
        params, config.retriever, self.store, self.tokenizer, self.eval_examples,
        config.eval_recall_ks, query_length=config.query_length, block_length=config.block_length,
        dtype=config.dtype, mesh=mesh)

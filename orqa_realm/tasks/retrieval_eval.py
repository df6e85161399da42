"""Evaluation of a retriever in training: every block of the store embedded by the current
model, the held-out questions searched exactly (ICT, DPR, ANCE); or, for a sparse retriever
(SPLADE, DeepCT), the store indexed with the current weights and searched by text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from orqa_realm.data.answers import answer_hits, recall_at_k
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.qa import QAExample
from orqa_realm.data.tokenization import Tokenizer
from orqa_realm.encode import embedding
from orqa_realm.index.exact import ExactSearcher
from orqa_realm.index.searcher import Searcher, TextSearcher
from orqa_realm.modeling.retriever import RetrieverConfig


def answer_recall_over_store(params: Any, config: RetrieverConfig, store: BlockStore,
                             tokenizer: Tokenizer, examples: Sequence[QAExample],
                             ks: Sequence[int], *, dtype, mesh: jax.sharding.Mesh
                             ) -> dict[str, float]:
  """{"answer_recall@k": fraction of `examples` with an answer in their top k blocks}."""
  blocks = embedding.embed_blocks(store, params, config, dtype=dtype, mesh=mesh)
  return answer_recall_of_index(params, config, ExactSearcher(blocks, mesh=mesh), store,
                                tokenizer, examples, ks, dtype=dtype, mesh=mesh)


def answer_recall_of_index(params: Any, config: RetrieverConfig, searcher: Searcher,
                           store: BlockStore, tokenizer: Tokenizer,
                           examples: Sequence[QAExample], ks: Sequence[int], *, dtype,
                           mesh: jax.sharding.Mesh) -> dict[str, float]:
  """Answer recall@k of `examples` searched in `searcher` (embeddings of `store`'s blocks) by
  the query tower of `params`."""
  queries = embedding.embed_queries([example.question for example in examples], params, config,
                                    tokenizer, dtype=dtype, mesh=mesh)
  depth = min(max(ks), len(store))
  return answer_recalls(searcher.search(queries, depth).ids, store, examples, ks)


def answer_recall_of_text_searcher(searcher: TextSearcher, store: BlockStore,
                                   examples: Sequence[QAExample], ks: Sequence[int]
                                   ) -> dict[str, float]:
  """Answer recall@k of `examples` searched by their text in `searcher` (a sparse index with its
  query encoder, BM25, ...) over `store`'s blocks."""
  depth = min(max(ks), len(store))
  ids = searcher.search_texts([example.question for example in examples], depth).ids
  return answer_recalls(ids, store, examples, ks)


def answer_recalls(ids: np.ndarray, store: BlockStore, examples: Sequence[QAExample],
                   ks: Sequence[int]) -> dict[str, float]:
  """{"answer_recall@k"} of rankings `ids` [questions, depth], for each k up to the depth (the
  depth itself when every k is beyond it: a store smaller than the cut-offs)."""
  depth = ids.shape[1]
  recalls = recall_at_k(answer_hits(ids, store, examples),
                        [k for k in ks if k <= depth] or [depth])
  return {f"answer_recall@{k}": recall for k, recall in recalls.items()}


class StoreRecallEvaluator:
  """`Task.evaluate` of a dual-encoder task: answer recall@k of held-out questions over the
  whole store, embedded with the parameters being evaluated."""

  def __init__(self, store: BlockStore, tokenizer: Tokenizer, examples: Sequence[QAExample],
               ks: Sequence[int], config: RetrieverConfig, dtype: str):
    self.store, self.tokenizer = store, tokenizer
    self.examples, self.ks = list(examples), tuple(sorted(ks))
    self.config, self.dtype = config, jnp.dtype(dtype)

  def __call__(self, params: Any, mesh: jax.sharding.Mesh) -> dict[str, float]:
    if not self.examples:
      return {}
    return answer_recall_over_store(params, self.config, self.store, self.tokenizer,
                                    self.examples, self.ks, dtype=self.dtype, mesh=mesh)

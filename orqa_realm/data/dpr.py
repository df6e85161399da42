"""DPR training examples: each question's positive block and its BM25 hard negatives.

Positives (DPR, Karpukhin et al. 2020, section 5.1):
  * a QA question naming its gold paragraph (SQuAD): that paragraph, a positive by definition;
    when it spans several blocks, the best by BM25 of those containing an answer (or of all of
    them, when the answer only occurs inflected, e.g. "Luther's" for "Luther");
  * any other QA question: the highest BM25 block that contains an answer (DPR's rule for
    Natural Questions, TriviaQA, WebQuestions and CuratedTREC);
  * a BEIR query: one example per judged-relevant document, its best BM25 block.
Questions without a positive are dropped, and counted.

Hard negatives: the best BM25 blocks that are not answers to the question: for QA, blocks
whose text contains no answer (and not of the gold paragraph); for BEIR, blocks of documents
the qrels say nothing about for that query (an unjudged document may be relevant, but a judged
one is never taken as a negative). When BM25's top `depth` holds too few, the rest are drawn
at random (seeded per question) under the same rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from orqa_realm.data.answer_spans import BlockAnswerMatcher
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.qa import QAExample
from orqa_realm.index.searcher import SearchResult


class DPRExample(NamedTuple):
  question: str
  positive: int  # block index
  hard_negatives: tuple[int, ...]  # block indices, BM25's best first


class DPRExamples(NamedTuple):
  examples: list[DPRExample]
  num_dropped: int  # questions without a positive block
  num_random_negatives: int  # negatives drawn at random when BM25's top `depth` ran short


def document_blocks(store: BlockStore) -> dict[str, np.ndarray]:
  """{document id: its blocks, in order}."""
  documents = store.document_indices()
  starts = np.flatnonzero(np.diff(documents, prepend=-1))  # blocks of a document are contiguous
  ends = np.append(starts[1:], len(documents))
  return {store.document_id(int(start)): np.arange(start, end)
          for start, end in zip(starts, ends)}


def _first_by_rank(candidates: np.ndarray, ranking: np.ndarray) -> int:
  """The candidate BM25 ranked best (candidates it did not rank come after, in order)."""
  rank = {int(block): position for position, block in enumerate(ranking)}
  return int(min(candidates, key=lambda block: (rank.get(int(block), len(ranking)), block)))


def _hard_negatives(ranking: np.ndarray, allowed: Callable[[int], bool], count: int,
                    num_blocks: int, rng: np.random.Generator) -> tuple[tuple[int, ...], int]:
  """(`count` allowed blocks, BM25's first, then random ones; how many are random)."""
  negatives = [int(block) for block in ranking if allowed(int(block))][:count]
  chosen = set(negatives) | set(int(block) for block in ranking)
  num_random = count - len(negatives)
  for block in rng.permutation(num_blocks):
    if len(negatives) == count:
      break
    if int(block) not in chosen and allowed(int(block)):
      negatives.append(int(block))
  if len(negatives) < count:
    raise ValueError(f"the store has fewer than {count} blocks that may be hard negatives")
  return tuple(negatives), num_random


def qa_examples(examples: Sequence[QAExample], store: BlockStore, rankings: SearchResult,
                num_hard_negatives: int, *, seed: int = 0) -> DPRExamples:
  """DPR examples of QA questions from their BM25 rankings ([questions, depth] ids)."""
  matcher = BlockAnswerMatcher(store)
  blocks_of = document_blocks(store)
  dpr_examples, dropped, random_negatives = [], 0, 0
  for index, (example, ranking) in enumerate(zip(examples, rankings.ids)):
    contains = lambda blocks: matcher.has_answer(blocks, example.answers, example.kind)
    if example.gold_document_id:
      gold = blocks_of.get(example.gold_document_id, np.zeros(0, np.int64))
      with_answer = gold[contains(gold)] if len(gold) else gold
      candidates = with_answer if len(with_answer) else gold
    else:
      gold = np.zeros(0, np.int64)
      candidates = ranking[contains(ranking)]
    if not len(candidates):
      dropped += 1
      continue
    positive = _first_by_rank(candidates, ranking)
    gold_set = set(gold.tolist())
    negatives, num_random = _hard_negatives(
        ranking, lambda block: block not in gold_set and not contains([block])[0],
        num_hard_negatives, len(store), np.random.default_rng([seed, index]))
    random_negatives += num_random
    dpr_examples.append(DPRExample(example.question, positive, negatives))
  return DPRExamples(dpr_examples, dropped, random_negatives)


def beir_examples(queries: dict[str, str], qrels: dict[str, dict[str, int]], store: BlockStore,
                  rankings: dict[str, np.ndarray], num_hard_negatives: int, *,
                  seed: int = 0) -> DPRExamples:
  """DPR examples of BEIR queries: one per (query, judged-relevant document in the store).

  Args:
    rankings: {query id: its BM25 ranking [depth] of block ids}.
  """
  blocks_of = document_blocks(store)
  document_of = store.document_indices()
  dpr_examples, dropped, random_negatives = [], 0, 0
  for index, (query_id, judgements) in enumerate(sorted(qrels.items())):
    relevant = [doc for doc, relevance in sorted(judgements.items())
                if relevance > 0 and doc in blocks_of]
    if query_id not in queries or not relevant:
      dropped += 1
      continue
    ranking = rankings[query_id]
    judged = {int(document_of[blocks_of[doc][0]]) for doc in judgements if doc in blocks_of}
    rng = np.random.default_rng([seed, index])
    for doc in relevant:
      negatives, num_random = _hard_negatives(
          ranking, lambda block: int(document_of[block]) not in judged, num_hard_negatives,
          len(store), rng)
      random_negatives += num_random
      dpr_examples.append(DPRExample(queries[query_id], _first_by_rank(blocks_of[doc], ranking),
                                     negatives))
  return DPRExamples(dpr_examples, dropped, random_negatives)

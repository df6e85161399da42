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


class DPRExample(NamedTuple):
  question: str
  positive: int  # block index
  hard_negatives: tuple[int, ...]  # block indices, BM25's best first
  # What may never be a negative: blocks of these documents (the gold paragraph; a BEIR query's
  # judged documents), and blocks whose text contains one of these answers.
  excluded_documents: tuple[int, ...] = ()
  answers: tuple[str, ...] = ()
  answer_kind: str = "text"


class DPRExamples(NamedTuple):
  examples: list[DPRExample]
  num_dropped: int  # questions without a positive block
  num_random_negatives: int  # negatives drawn at random when BM25's top `depth` ran short


class NegativeRule:
  """Whether a block may be a negative of an example: not of an excluded document, and
  containing none of its answers (`BlockAnswerMatcher`'s cached texts keep this cheap)."""

  def __init__(self, store: BlockStore):
    self.documents = store.document_indices()
    self.matcher = BlockAnswerMatcher(store)

  def allows(self, example: DPRExample, block: int) -> bool:
    if int(self.documents[block]) in example.excluded_documents:
      return False
    return not (example.answers
                and self.matcher.has_answer([block], example.answers, example.answer_kind)[0])


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


def fill_negatives(chosen: Sequence[int], allowed: Callable[[int], bool], count: int,
                   num_blocks: int, rng: np.random.Generator, *,
                   skip: Sequence[int] = ()) -> tuple[tuple[int, ...], int]:
  """`chosen` topped up to `count` with random allowed blocks (never one of `chosen` or
  `skip`): (the negatives, how many are random)."""
  negatives = [int(block) for block in chosen][:count]
  taken = set(negatives) | {int(block) for block in skip}
  num_random = count - len(negatives)
  for block in rng.permutation(num_blocks):
    if len(negatives) == count:
      break
    if int(block) not in taken and allowed(int(block)):
      negatives.append(int(block))
  if len(negatives) < count:
    raise ValueError(f"the store has fewer than {count} blocks that may be negatives")
  return tuple(negatives), num_random


def bm25_negatives(example: DPRExample, ranking: np.ndarray, rule: NegativeRule, count: int,
                   rng: np.random.Generator) -> tuple[DPRExample, int]:
  """`example` with BM25's best `count` allowed blocks of `ranking` as hard negatives (topped
  up at random), and how many are random."""
  allowed = lambda block: rule.allows(example, block)
  negatives, num_random = fill_negatives([b for b in ranking if allowed(int(b))], allowed, count,
                                         len(rule.documents), rng, skip=ranking)
  return example._replace(hard_negatives=negatives), num_random


def qa_examples(examples: Sequence[QAExample], store: BlockStore, rankings: np.ndarray,
                num_hard_negatives: int, *, seed: int = 0) -> DPRExamples:
  """DPR examples of QA questions from their BM25 rankings ([questions, depth] block ids)."""
  rule = NegativeRule(store)
  blocks_of = document_blocks(store)
  dpr_examples, dropped, random_negatives = [], 0, 0
  for index, (example, ranking) in enumerate(zip(examples, rankings)):
    contains = lambda blocks: rule.matcher.has_answer(blocks, example.answers, example.kind)
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
    excluded = tuple(sorted({int(rule.documents[block]) for block in gold}))
    dpr_example = DPRExample(example.question, _first_by_rank(candidates, ranking), (),
                             excluded, tuple(example.answers), example.kind)
    dpr_example, num_random = bm25_negatives(dpr_example, ranking, rule, num_hard_negatives,
                                             np.random.default_rng([seed, index]))
    random_negatives += num_random
    dpr_examples.append(dpr_example)
  return DPRExamples(dpr_examples, dropped, random_negatives)


def beir_examples(queries: dict[str, str], qrels: dict[str, dict[str, int]], store: BlockStore,
                  rankings: dict[str, np.ndarray], num_hard_negatives: int, *,
                  seed: int = 0) -> DPRExamples:
  """DPR examples of BEIR queries: one per (query, judged-relevant document in the store).

  Args:
    rankings: {query id: its BM25 ranking [depth] of block ids}.
  """
  rule = NegativeRule(store)
  blocks_of = document_blocks(store)
  dpr_examples, dropped, random_negatives = [], 0, 0
  for index, (query_id, judgements) in enumerate(sorted(qrels.items())):
    relevant = [doc for doc, relevance in sorted(judgements.items())
                if relevance > 0 and doc in blocks_of]
    if query_id not in queries or not relevant:
      dropped += 1
      continue
    ranking = rankings[query_id]
    judged = tuple(sorted(int(rule.documents[blocks_of[doc][0]]) for doc in judgements
                          if doc in blocks_of))
    rng = np.random.default_rng([seed, index])
    for doc in relevant:
      dpr_example = DPRExample(queries[query_id], _first_by_rank(blocks_of[doc], ranking), (),
                               judged)
      dpr_example, num_random = bm25_negatives(dpr_example, ranking, rule, num_hard_negatives,
                                               rng)
      random_negatives += num_random
      dpr_examples.append(dpr_example)
  return DPRExamples(dpr_examples, dropped, random_negatives)

"""DeepCT's data (Dai and Callan 2019): the words of a BERT input, their query term recall
targets, and the term frequencies a trained model's weights rewrite a passage into.

A word is what BERT's WordPiece splits into pieces: a piece and the `##` continuations after it,
joined (special tokens and [UNK] belong to no word). The model predicts one weight per word, at
its first piece. What BM25 then indexes of a word are its terms: the word through BM25's analyzer
(`analyze`: lower-cased, stop words removed, stemmed; most words give one term, a stop word or a
single character none). Queries are split into words the same way, so that a query and a passage
agree on what a term is.

Targets (DeepCT's query term recall, QTR): of the training queries relevant to a passage, the
fraction whose terms include the word's term; 0 for a word no query mentions. A word without a
term is left out of the loss: BM25 never indexes it, whatever its weight.

Rewriting: a term's frequency in the rewritten passage is round(weight x scale) of its word, the
largest over the word's occurrences (DeepCT's conversion); terms below 1 are dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import numpy as np

# Words -> the terms BM25 makes of each (`index/bm25.py`'s analyzer).
Analyzer = Callable[[Sequence[str]], list[list[str]]]
CONTINUATION = "##"


class InputWords(NamedTuple):
  """The words of one BERT input."""
  positions: np.ndarray  # [words] int32, the input position of each word's first piece
  terms: tuple[tuple[str, ...], ...]  # [words] the BM25 terms of each word (often one, or none)


class WordSplitter:
  """Splits BERT inputs (rows of wordpiece ids) into words and their BM25 terms.

  `pieces`: the vocabulary's wordpiece strings by id; `special_ids`: ids that belong to no word
  ([CLS], [SEP], [PAD], [UNK], [MASK]). Terms of each distinct word are analysed once.
  """

  def __init__(self, pieces: Sequence[str], special_ids: Iterable[int], analyze: Analyzer):
    self.pieces = list(pieces)
    self.special = np.zeros(len(self.pieces), bool)
    self.special[list(special_ids)] = True
    self.analyze = analyze
    self._terms: dict[str, tuple[str, ...]] = {}

  def terms_of(self, words: Sequence[str]) -> list[tuple[str, ...]]:
    """The BM25 terms of each word (cached)."""
    new = sorted({word for word in words if word not in self._terms})
    for word, terms in zip(new, self.analyze(new) if new else []):
      self._terms[word] = tuple(terms)
    return [self._terms[word] for word in words]

  def word_strings(self, token_ids: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """([words] int32 first-piece positions, [words] word strings) of one row of ids."""
    positions, words = [], []
    joinable = False  # whether a continuation piece here extends the previous word
    for position, token_id in enumerate(np.asarray(token_ids).tolist()):
      if self.special[token_id]:
        joinable = False
        continue
      piece = self.pieces[token_id]
      if piece.startswith(CONTINUATION) and joinable:
        words[-1] += piece[len(CONTINUATION):]
        continue
      positions.append(position)
      words.append(piece.removeprefix(CONTINUATION))
      joinable = True
    return np.asarray(positions, np.int32), words

  def input_words(self, token_ids: np.ndarray) -> InputWords:
    """The words of one row of ids ([length] int), with their terms."""
    positions, words = self.word_strings(token_ids)
    return InputWords(positions, tuple(self.terms_of(words)))

  def text_terms(self, token_ids: Sequence[int]) -> list[str]:
    """The terms of a text's wordpiece ids, in order (a query, as BM25 reads it for DeepCT)."""
    return [term for terms in self.input_words(np.asarray(token_ids, np.int64)).terms
            for term in terms]


def query_term_recall(queries_terms: Sequence[set[str]]) -> dict[str, float]:
  """{term: the fraction of the queries whose terms include it} over one passage's relevant
  queries (DeepCT's QTR)."""
  counts: dict[str, int] = {}
  for terms in queries_terms:
    for term in terms:
      counts[term] = counts.get(term, 0) + 1
  return {term: count / len(queries_terms) for term, count in counts.items()}


def word_targets(words: InputWords, term_recall: dict[str, float],
                 length: int) -> tuple[np.ndarray, np.ndarray]:
  """A passage's regression targets at each input position, and where the loss reads them.

  Returns:
    targets: [length] float32, at each word's first piece its best term's recall (0 when no
      relevant query has it), 0 elsewhere.
    mask: [length] float32, 1 at the first piece of each word that has a term.
  """
  targets, mask = np.zeros(length, np.float32), np.zeros(length, np.float32)
  for position, terms in zip(words.positions, words.terms):
    if terms:
      targets[position] = max(term_recall.get(term, 0.0) for term in terms)
      mask[position] = 1.0
  return targets, mask


def term_frequencies(words: InputWords, weights: np.ndarray, scale: float) -> dict[str, int]:
  """{term: round(weight x scale)} of one passage from its [length] predicted weights: each
  word's weight read at its first piece, a term's frequency the largest over its words, terms
  below 1 dropped."""
  frequencies: dict[str, int] = {}
  for position, terms in zip(words.positions, words.terms):
    frequency = int(np.round(float(weights[position]) * scale))
    if frequency < 1:
      continue
    for term in terms:
      frequencies[term] = max(frequency, frequencies.get(term, 0))
  return frequencies


def rewritten_terms(frequencies: dict[str, int]) -> list[str]:
  """A passage as BM25 indexes it: each term repeated its frequency times, in term order."""
  return [term for term in sorted(frequencies) for _ in range(frequencies[term])]

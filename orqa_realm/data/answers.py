"""Answer matching and retrieval metrics for open-domain QA.

Text answers are compared after SQuAD's normalisation (lowercase, no punctuation, no articles,
single spaces). CuratedTREC's answers are regular expressions: a match anywhere in the text counts,
case-insensitively, for both predictions and retrieved blocks.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
  """SQuAD v1.1's official normalisation: lowercase, drop punctuation and articles, fix spaces."""
  text = text.lower()
  text = "".join(ch for ch in text if ch not in _PUNCTUATION)
  text = _ARTICLES.sub(" ", text)
  return " ".join(text.split())


@lru_cache(maxsize=4096)
def compile_answer_pattern(pattern: str) -> re.Pattern:
  return re.compile(pattern, flags=re.IGNORECASE | re.UNICODE | re.MULTILINE)


def regex_match(text: str, pattern: str) -> bool:
  """True when the answer pattern matches anywhere in `text`."""
  return compile_answer_pattern(pattern).search(text) is not None


def exact_match(prediction: str, answers: Iterable[str], kind: str = "text") -> bool:
  """Exact match of a predicted answer against any reference (max over references)."""
  if kind == "regex":
    return any(regex_match(prediction, pattern) for pattern in answers)
  normalized_prediction = normalize_answer(prediction)
  return any(normalized_prediction == normalize_answer(answer) for answer in answers)


def contains_normalized_answer(normalized_text: str, answers: Iterable[str]) -> bool:
  """Whether any answer, normalised, occurs as a whole run of tokens of `normalized_text` (the
  output of `normalize_answer`, so single-spaced): a padded substring test."""
  padded_text = f" {normalized_text} "
  for answer in answers:
    normalized = normalize_answer(answer)
    if normalized and f" {normalized} " in padded_text:
      return True
  return False


def has_answer(text: str, answers: Iterable[str], kind: str = "text") -> bool:
  """Whether a block's text contains an answer.

  Text answers must occur as a whole run of normalised tokens ("1930" does not match inside
  "1930s"); regex answers may match anywhere.
  """
  if kind == "regex":
    return any(regex_match(text, pattern) for pattern in answers)
  return contains_normalized_answer(normalize_answer(text), answers)


def recall_at_k(hits: np.ndarray, ks: Iterable[int]) -> dict[int, float]:
  """Fraction of questions with a hit among their top k results, for each k.

  Args:
    hits: [num_questions, depth] bool, hits[q, r] says whether the r-th result of q is correct.
    ks: cut-offs; each must be <= depth, so that recall is never silently computed on fewer results.
  """
  hits = np.asarray(hits, dtype=bool)
  if hits.ndim != 2:
    raise ValueError(f"hits must be [num_questions, depth], got shape {hits.shape}")
  recalls = {}
  for k in ks:
    if not 1 <= k <= hits.shape[1]:
      raise ValueError(f"recall@{k} needs at least {k} results per question, have {hits.shape[1]}")
    recalls[k] = float(hits[:, :k].any(axis=1).mean()) if len(hits) else 0.0
  return recalls


def answer_hits(block_ids: np.ndarray, store, examples: Sequence) -> np.ndarray:
  """[questions, k] bool: whether the r-th block of `store` retrieved for the q-th `QAExample`
  contains one of its answers."""
  return np.array([[has_answer(store.text(block), example.answers, example.kind)
                    for block in blocks] for blocks, example in zip(block_ids, examples)])


def gold_hits(block_ids: np.ndarray, store, examples: Sequence) -> np.ndarray:
  """[questions, k] bool: whether the r-th retrieved block comes from the gold paragraph."""
  return np.array([[store.document_id(block) == example.gold_document_id for block in blocks]
                   for blocks, example in zip(block_ids, examples)])

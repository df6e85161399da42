"""BM25 over the blocks of a block store (bm25s), behind the text searcher protocol.

Each block is indexed as its title followed by its text (and, with `--bm25_expansions`, the
questions doc2query generated for it: `data/expansions.py`), lower-cased, split into words,
English stop words removed and Snowball-stemmed (PyStemmer). The defaults k1 = 0.9, b = 0.4 are
Anserini's, with which Pyserini's BEIR baselines were run.

An index can be saved next to the runs that use it (`open_or_build` with a directory): it
records the block store's fingerprint and the BM25 settings, and is refused for another store or
other settings (or expansions generated again since) rather than silently searched.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence

import bm25s
import numpy as np
import Stemmer
from absl import logging
from etils import epath
from bm25s.tokenization import Tokenizer as WordTokenizer

from orqa_realm.core import paths
from orqa_realm.core.config import nested, setting
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.expansions import Expansions
from orqa_realm.data.files import Owner, atomic_directory, check_replaceable, read_manifest
from orqa_realm.core.errors import InputError
from orqa_realm.index.searcher import SearchResult, check_k

FORMAT_VERSION = 1
META_FILE = "bm25.json"
OWNER = Owner(META_FILE, "orqa_realm.bm25")


@dataclasses.dataclass(frozen=True)
class BM25Settings:
  """How blocks and queries are scored."""
  k1: float = setting(0.9, "BM25 term frequency saturation.", flag="bm25_k1")
  b: float = setting(0.4, "BM25 length normalisation.", flag="bm25_b")
  stemmer: str = setting("english", "PyStemmer (Snowball) algorithm for BM25 words; '' for none.",
                         flag="bm25_stemmer")
  stopwords: str = setting("en", "bm25s stop word list (e.g. en); '' for none.",
                           flag="bm25_stopwords")
  expansions: str = setting(
      "", "Name of the block store's doc2query expansions (python -m orqa_realm.expand) whose "
      "questions are indexed with each block; '' for none.", flag="bm25_expansions")


@dataclasses.dataclass(frozen=True)
class BM25Config:
  """A BM25 index of a block store: how it scores, and where it is kept."""
  settings: BM25Settings = nested(BM25Settings())
  directory: str = setting(
      "", "Where the BM25 index of --block_store is kept: loaded when there, built and saved "
      "there otherwise. Empty: built in memory for the run.", flag="bm25_dir")


def block_text(store: BlockStore, block: int, expansions: Expansions | None = None) -> str:
  """What BM25 indexes of a block: its title, its text, then its generated questions."""
  text = f"{store.title(block)}\n{store.text(block)}"
  return text if expansions is None else "\n".join([text, *expansions.questions(block)])


def _expansions(store: BlockStore, settings: BM25Settings) -> Expansions | None:
  return Expansions(store, settings.expansions) if settings.expansions else None


def _stemmer(settings: BM25Settings):
  return Stemmer.Stemmer(settings.stemmer) if settings.stemmer else None


def _stopwords(settings: BM25Settings) -> str | list[str]:
  return settings.stopwords or []


def analyzer(settings: BM25Settings) -> Callable[[Sequence[str]], list[list[str]]]:
  """texts -> the terms BM25 indexes and scores of each: lower-cased words of 2+ characters,
  stop words removed, stemmed (as bm25s tokenizes)."""
  stemmer, stopwords = _stemmer(settings), _stopwords(settings)
  return lambda texts: bm25s.tokenize(list(texts), stopwords=stopwords, stemmer=stemmer,
                                      return_ids=False, show_progress=False)


class BM25Searcher:
  """BM25 top-k blocks of question or query texts."""

  def __init__(self, retriever: bm25s.BM25, settings: BM25Settings, num_rows: int,
               expansions_fingerprint: str | None = None):
    self.retriever, self.settings = retriever, settings
    self._num_rows = num_rows
    self.expansions_fingerprint = expansions_fingerprint
    self._analyze = analyzer(settings)

  @property
  def num_rows(self) -> int:
    return self._num_rows

  @classmethod
  def build(cls, store: BlockStore, settings: BM25Settings = BM25Settings()) -> BM25Searcher:
    """Indexes every block of `store`, streaming their texts."""
    started = time.perf_counter()
    expansions = _expansions(store, settings)
    words = WordTokenizer(stopwords=_stopwords(settings), stemmer=_stemmer(settings))
    texts: Iterator[str] = (block_text(store, block, expansions) for block in range(len(store)))
    tokens = words.tokenize(texts, length=len(store), update_vocab=True, return_as="tuple",
                            show_progress=False)
    retriever = bm25s.BM25(k1=settings.k1, b=settings.b, method="lucene")
    retriever.index(tokens, show_progress=False)
    logging.info("BM25 indexed %d blocks in %.1f s", len(store), time.perf_counter() - started)
    return cls(retriever, settings, len(store),
               expansions.fingerprint if expansions is not None else None)

  def save(self, directory: str, store: BlockStore) -> None:
    """Writes the index and what it was built from to `directory`, atomically."""
    with atomic_directory(directory, OWNER) as partial:
      self.retriever.save(partial, show_progress=False)
      meta = dict(format=OWNER.format, format_version=FORMAT_VERSION, num_rows=self.num_rows,
                  store_fingerprint=store.fingerprint, settings=dataclasses.asdict(self.settings),
                  expansions_fingerprint=self.expansions_fingerprint)
      with open(os.path.join(partial, META_FILE), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)

  @classmethod
  def load(cls, directory: str, store: BlockStore, settings: BM25Settings) -> BM25Searcher:
    """The index saved in `directory`, refused unless built from `store` with `settings`."""
    path, meta = read_manifest(directory, OWNER, "BM25 index", FORMAT_VERSION)
    store.check_matches(num_rows=meta["num_rows"], fingerprint=meta["store_fingerprint"],
                        source=f"the BM25 index {directory}")
    saved = BM25Settings(**meta["settings"])
    if saved != settings:
      raise InputError(f"the BM25 index was built with {saved}, not the requested {settings}: "
                       "pass its settings or another --bm25_dir", path=path)
    expansions = _expansions(store, settings)
    # Indexes written before expansions existed have no such entry, and no expansions.
    indexed = meta.get("expansions_fingerprint")
    if expansions is not None and expansions.fingerprint != indexed:
      raise InputError(f"the BM25 index holds the expansions {settings.expansions!r} of "
                       f"fingerprint {indexed}, generated again since "
                       f"({expansions.fingerprint}): delete it to rebuild", path=path,
                       field="bm25_expansions")
    with paths.local_directory(directory) as local:
      retriever = bm25s.BM25.load(local, show_progress=False)
    return cls(retriever, settings, meta["num_rows"], indexed)

  def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
    """The stemmed words of each text that BM25 scores (words not in the index are ignored)."""
    return self._analyze(texts)

  def search_texts(self, texts: Sequence[str], k: int) -> SearchResult:
    """The k best blocks of each text, best first; blocks sharing no word with it score 0."""
    check_k(k, self.num_rows)
    ids, scores = self.retriever.retrieve(self.tokenize(texts), k=k, show_progress=False)
    return SearchResult(ids.astype(np.int64), scores.astype(np.float32))


def open_or_build(store: BlockStore, config: BM25Config) -> BM25Searcher:
  """The BM25 index of `store`: loaded from `config.directory` when one is there, otherwise built
  (and saved there when a directory is given)."""
  settings, directory = config.settings, config.directory
  if directory and (epath.Path(directory) / META_FILE).exists():
    return BM25Searcher.load(directory, store, settings)
  if directory:  # refused before indexing, not after
    check_replaceable(directory, OWNER)
  searcher = BM25Searcher.build(store, settings)
  if directory:
    searcher.save(directory, store)
  return searcher

"""The block store: documents split into sentence-aligned blocks of WordPiece ids (ORQA's scheme).

Each document is split into sentences, and whole sentences are packed greedily into blocks so
that `[CLS] title [SEP] block [SEP]` fits in `max_block_length` wordpieces; a sentence longer than
a block is cut into block-sized pieces. Blocks never span documents. The store keeps, per block,
its wordpieces with their character spans in its text, text, sentence boundaries (in wordpieces
and characters) and document; per
document, its id, title and title wordpieces. Columns are memory-mapped (see `columns.py`), and a
manifest records counts, the tokenizer fingerprint and a content fingerprint that embeddings and
indexes built from the store carry, so a mismatched pair is refused instead of silently misread.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, NamedTuple

import blingfire
import numpy as np
import tqdm
from etils import epath

from orqa_realm.core import paths
from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.data import columns
from orqa_realm.data.documents import Document
from orqa_realm.data.files import Owner, atomic_directory
from orqa_realm.data.pretrained import resolve_model_dir
from orqa_realm.data.tokenization import TokenBatch, Tokenizer, pack_inputs

FORMAT = "orqa_realm.block_store"
VERSION = 2  # 2: wordpiece character spans (block_token_char_spans)
MANIFEST = "manifest.json"
OWNER = Owner(MANIFEST, FORMAT)

BlockFormat = Literal["pair", "joined"]
# How a block becomes model input:
BLOCK_FORMATS = {
    # ORQA/REALM: [CLS] title [SEP] text [SEP], the text as segment 1.
    "pair": "[CLS] title [SEP] text [SEP]",
    # sentence-transformers and BEIR: [CLS] title text [SEP], one segment.
    "joined": "[CLS] title text [SEP]",
}


def check_block_format(block_format: str) -> None:
  """Raises an InputError naming --block_format unless it is one of BLOCK_FORMATS."""
  if block_format not in BLOCK_FORMATS:
    raise InputError(f"block format {block_format!r} is not one of {sorted(BLOCK_FORMATS)}",
                     field="block_format")


class Sentence(NamedTuple):
  """A packing unit: a sentence, or a block-sized piece of an over-long one."""
  token_ids: Sequence[int]  # wordpieces, no special tokens
  char_start: int  # in the document text
  char_end: int
  token_char_spans: np.ndarray  # [num_tokens, 2] int64 (start, end) of each piece in the document


class Block(NamedTuple):
  """One block read back from the store."""
  text: str
  title: str
  document_id: str
  token_ids: np.ndarray  # [num_tokens] int32, the block text's wordpieces
  token_char_spans: np.ndarray  # [num_tokens, 2] int32 (start, end) of each wordpiece in text
  title_token_ids: np.ndarray  # [num_title_tokens] int32
  sentence_token_starts: np.ndarray  # [num_sentences] int32, into token_ids
  sentence_char_starts: np.ndarray  # [num_sentences] int32, into text


def split_sentences(text: str) -> list[tuple[int, int]]:
  """Character spans of the sentences of `text`."""
  if not text.strip():
    return []
  _, spans = blingfire.text_to_sentences_and_offsets(text)
  return [(int(start), int(end)) for start, end in spans]


def sentence_units(
    spans: Sequence[tuple[int, int]],
    tokenized: Sequence[tuple[Sequence[int], Sequence[tuple[int, int]]]],
    budget: int,
) -> list[Sentence]:
  """Turns tokenized sentences into packing units of at most `budget` wordpieces.

  Args:
    spans: each sentence's character span in the document.
    tokenized: each sentence's wordpiece ids and their character spans within the sentence.
    budget: wordpieces available for block text.
  """
  units = []
  for (sentence_start, _), (token_ids, offsets) in zip(spans, tokenized):
    document_offsets = sentence_start + np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    for piece_start in range(0, len(token_ids), budget):
      piece_offsets = document_offsets[piece_start:piece_start + budget]
      units.append(Sentence(token_ids=token_ids[piece_start:piece_start + budget],
                            char_start=int(piece_offsets[0, 0]), char_end=int(piece_offsets[-1, 1]),
                            token_char_spans=piece_offsets))
  return units


def pack_sentences(sentences: Sequence[Sentence], budget: int) -> list[list[Sentence]]:
  """Greedily packs consecutive sentences into blocks of at most `budget` wordpieces."""
  blocks: list[list[Sentence]] = []
  current: list[Sentence] = []
  used = 0
  for sentence in sentences:
    if current and used + len(sentence.token_ids) > budget:
      blocks.append(current)
      current, used = [], 0
    current.append(sentence)
    used += len(sentence.token_ids)
  if current:
    blocks.append(current)
  return blocks


class BlockStore:
  """Read access to a block store directory; every column is memory-mapped."""

  def __init__(self, directory: paths.PathLike):
    """`directory`: a local path (columns are memory-mapped) or a URI (columns are read whole)."""
    self.directory = str(paths.resolve(directory))
    manifest_path = epath.Path(self.directory) / MANIFEST
    if not manifest_path.is_file():
      raise InputError(f"not a block store: no {MANIFEST}", path=self.directory)
    try:
      self.manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
      raise InputError(f"malformed manifest: {e.msg}", path=str(manifest_path),
                       line=e.lineno) from e
    if self.manifest.get("format") != FORMAT or self.manifest.get("version") != VERSION:
      raise InputError(f"expected format {FORMAT!r} version {VERSION}, got "
                       f"{self.manifest.get('format')!r} version {self.manifest.get('version')}",
                       path=str(manifest_path), field="format")
    entries = self.manifest["columns"]
    self._token_ids = columns.RaggedColumn(self.directory, "block_token_ids", entries)
    self._token_char_spans = columns.RaggedColumn(self.directory, "block_token_char_spans",
                                                  entries)
    self._texts = columns.RaggedColumn(self.directory, "block_text", entries)
    self._sentence_token_starts = columns.RaggedColumn(
        self.directory, "block_sentence_token_starts", entries)
    self._sentence_char_starts = columns.RaggedColumn(
        self.directory, "block_sentence_char_starts", entries)
    self._block_document = columns.open_column(self.directory, "block_document",
                                               entries["block_document"])
    self._block_char_start = columns.open_column(self.directory, "block_char_start",
                                                 entries["block_char_start"])
    self._document_ids = columns.RaggedColumn(self.directory, "document_id", entries)
    self._titles = columns.RaggedColumn(self.directory, "document_title", entries)
    self._title_token_ids = columns.RaggedColumn(self.directory, "title_token_ids", entries)
    num_blocks, num_documents = self.manifest["num_blocks"], self.manifest["num_documents"]
    if len(self._token_char_spans.values) != 2 * len(self._token_ids.values):
      raise InputError(f"has {len(self._token_char_spans.values)} values for "
                       f"{len(self._token_ids.values)} wordpieces (two each expected)",
                       path=os.path.join(self.directory, "block_token_char_spans.bin"))
    for name, column in [("block_token_ids", self._token_ids), ("block_text", self._texts),
                         ("block_token_char_spans", self._token_char_spans),
                         ("block_document", self._block_document),
                         ("block_char_start", self._block_char_start),
                         ("block_sentence_token_starts", self._sentence_token_starts),
                         ("block_sentence_char_starts", self._sentence_char_starts)]:
      if len(column) != num_blocks:
        raise InputError(f"has {len(column)} rows, the manifest says {num_blocks} blocks",
                         path=os.path.join(self.directory, f"{name}.bin"))
    for name, column in [("document_id", self._document_ids), ("document_title", self._titles),
                         ("title_token_ids", self._title_token_ids)]:
      if len(column) != num_documents:
        raise InputError(f"has {len(column)} rows, the manifest says {num_documents} documents",
                         path=os.path.join(self.directory, f"{name}.bin"))

  def __len__(self) -> int:
    return self.manifest["num_blocks"]

  @property
  def fingerprint(self) -> str:
    """Identifies the store's content; embeddings and indexes built from it record this."""
    return self.manifest["fingerprint"]

  @property
  def tokenizer_fingerprint(self) -> str:
    return self.manifest["tokenizer"]["fingerprint"]

  @property
  def lineage(self) -> list[dict[str, Any]]:
    """The stores this one grew from, oldest first: {fingerprint, num_blocks, num_documents,
    source} each. A grown store holds its ancestors' blocks first, in their order."""
    return self.manifest.get("lineage", [])

  def ancestor(self, fingerprint: str) -> dict[str, Any] | None:
    """The entry of `lineage` with `fingerprint`, None if this store did not grow from it."""
    return next((entry for entry in self.lineage if entry["fingerprint"] == fingerprint), None)

  def columns_by_name(self) -> dict[str, Any]:
    """Every column by name (ragged ones as RaggedColumn), as the writer names them."""
    return {"block_token_ids": self._token_ids, "block_token_char_spans": self._token_char_spans,
            "block_text": self._texts,
            "block_sentence_token_starts": self._sentence_token_starts,
            "block_sentence_char_starts": self._sentence_char_starts,
            "block_document": self._block_document, "block_char_start": self._block_char_start,
            "document_id": self._document_ids, "document_title": self._titles,
            "title_token_ids": self._title_token_ids}

  @property
  def max_block_length(self) -> int:
    return self.manifest["max_block_length"]

  def token_ids(self, block: int) -> np.ndarray:
    """[num_tokens] int32 wordpieces of the block text (no title, no special tokens)."""
    return np.asarray(self._token_ids[block])

  def token_char_spans(self, block: int) -> np.ndarray:
    """[num_tokens, 2] int32 (start, end) character span of each wordpiece in `text(block)`."""
    return np.asarray(self._token_char_spans[block]).reshape(-1, 2)

  def token_lengths(self) -> np.ndarray:
    """[num_blocks] int64 wordpieces of text per block."""
    return self._token_ids.lengths()

  def text(self, block: int) -> str:
    return self._texts.string(block)

  def document_index(self, block: int) -> int:
    return int(self._block_document[block])

  def document_indices(self) -> np.ndarray:
    """[num_blocks] int32 document of each block (memory-mapped)."""
    return self._block_document

  def document_id(self, block: int) -> str:
    return self._document_ids.string(self.document_index(block))

  def document_id_of(self, document: int) -> str:
    """The id of document `document` (an index in document order)."""
    return self._document_ids.string(document)

  def char_start(self, block: int) -> int:
    """Where the block text starts in its document's text."""
    return int(self._block_char_start[block])

  def title(self, block: int) -> str:
    return self._titles.string(self.document_index(block))

  def title_token_ids(self, block: int) -> np.ndarray:
    return np.asarray(self._title_token_ids[self.document_index(block)])

  def sentence_token_starts(self, block: int) -> np.ndarray:
    return np.asarray(self._sentence_token_starts[block])

  def sentence_counts(self) -> np.ndarray:
    """[num_blocks] int64 sentences (packing units) per block."""
    return self._sentence_token_starts.lengths()

  def sentence_char_starts(self, block: int) -> np.ndarray:
    return np.asarray(self._sentence_char_starts[block])

  def block(self, block: int) -> Block:
    return Block(
        text=self.text(block), title=self.title(block), document_id=self.document_id(block),
        token_ids=self.token_ids(block), token_char_spans=self.token_char_spans(block),
        title_token_ids=self.title_token_ids(block),
        sentence_token_starts=self.sentence_token_starts(block),
        sentence_char_starts=self.sentence_char_starts(block))

  def pack(self, first, second=None, *, max_length: int) -> TokenBatch:
    """`pack_inputs` with the special ids of the tokenizer the store was built with."""
    special = self.manifest["tokenizer"]["special_ids"]
    return pack_inputs(first, second, max_length, cls_id=special["cls"], sep_id=special["sep"],
                       pad_id=special["pad"])

  def pack_blocks(self, titles: Sequence[Sequence[int]], texts: Sequence[Sequence[int]], *,
                  max_length: int, block_format: BlockFormat = "pair") -> TokenBatch:
    """Block inputs from title and text ids in `block_format` (see BLOCK_FORMATS)."""
    check_block_format(block_format)
    if block_format == "pair":
      return self.pack(titles, texts, max_length=max_length)
    return self.pack([np.concatenate([title, text]).astype(np.int32)
                      for title, text in zip(titles, texts)], max_length=max_length)

  def encode(self, blocks: Sequence[int], max_length: int | None = None,
             block_format: BlockFormat = "pair") -> TokenBatch:
    """Inputs for the given block indices, padded to max_length (default: the store's)."""
    return self.pack_blocks([self.title_token_ids(b) for b in blocks],
                            [self.token_ids(b) for b in blocks],
                            max_length=max_length or self.max_block_length,
                            block_format=block_format)

  def input_lengths(self, block_format: BlockFormat = "pair") -> np.ndarray:
    """[num_blocks] int64 length of each block's untruncated input in `block_format`."""
    title_lengths = self._title_token_ids.lengths()[self.document_indices()]
    return title_lengths + self.token_lengths() + (3 if block_format == "pair" else 2)

  def check_tokenizer(self, tokenizer: Tokenizer) -> None:
    """Refuses a tokenizer whose vocabulary differs from the one the store was built with."""
    if tokenizer.fingerprint != self.tokenizer_fingerprint:
      raise InputError(
          f"the block store was tokenized with {self.manifest['tokenizer']['path']} (fingerprint "
          f"{self.tokenizer_fingerprint}), but the model's tokenizer {tokenizer.model_dir} has "
          f"fingerprint {tokenizer.fingerprint}", path=self.directory, field="tokenizer")

  def check_matches(self, *, num_rows: int, fingerprint: str, source: str) -> None:
    """Refuses embeddings or an index (`source`) that were not built from this store."""
    if num_rows != len(self) or fingerprint != self.fingerprint:
      raise InputError(
          f"built from a block store with {num_rows} blocks (fingerprint {fingerprint}), but "
          f"{self.directory} has {len(self)} blocks (fingerprint {self.fingerprint})",
          path=source, field="block_store")


@dataclasses.dataclass(frozen=True)
class StoreSource:
  """A block store and the model whose tokenizer reads it."""
  block_store: str = setting(
      "", "Block store directory (built with python -m orqa_realm.preprocess).")
  bert: str = setting(
      "minilm", "Hugging Face BERT directory (config.json, model.safetensors, vocab) or a "
      "packaged model name ('minilm'): the architecture, the tokenizer, and the initial weights.")

  def open_store(self) -> tuple[BlockStore, Tokenizer]:
    """The block store, and --bert's tokenizer (refused when the store used another)."""
    return open_store(self.block_store, self.bert)


def open_store(directory: str | os.PathLike, model: str) -> tuple[BlockStore, Tokenizer]:
  """The block store at `directory` and the tokenizer of `model` (a Hugging Face directory or a
  packaged model's name), refused when the store was tokenized with another vocabulary."""
  if not directory:
    raise InputError("no block store given", field="block_store")
  store = BlockStore(directory)
  tokenizer = Tokenizer(resolve_model_dir(model))
  store.check_tokenizer(tokenizer)
  return store, tokenizer


def _chunks(iterable: Iterable[Document], size: int) -> Iterator[list[Document]]:
  iterator = iter(iterable)
  while chunk := list(itertools.islice(iterator, size)):
    yield chunk


def build_block_store(
    documents: Iterable[Document],
    tokenizer: Tokenizer,
    output_dir: str | os.PathLike,
    *,
    max_block_length: int = 288,
    max_title_length: int = 32,
    source: str = "",
    overwrite: bool = False,
    chunk_size: int = 512,
    show_progress: bool = False,
) -> BlockStore:
  """Splits documents into blocks and writes a block store to `output_dir`.

  The store is written to a temporary sibling directory and renamed into place at the end, so a
  killed build leaves no half-written store behind. Documents with empty text yield no block.
  """
  output_dir = str(paths.resolve(output_dir))
  if max_title_length + 3 >= max_block_length:
    raise ValueError(f"max_title_length {max_title_length} leaves no room in blocks of "
                     f"{max_block_length} wordpieces")
  if epath.Path(output_dir).exists() and not overwrite:
    raise InputError("already exists (pass overwrite=True / --overwrite to replace it)",
                     path=output_dir)
  paths.check_writable(epath.Path(output_dir).parent)
  with atomic_directory(output_dir, OWNER) as partial_dir:
    _write_store(documents, tokenizer, partial_dir, max_block_length=max_block_length,
                 max_title_length=max_title_length, source=source, chunk_size=chunk_size,
                 show_progress=show_progress)
  return BlockStore(output_dir)


def grow_block_store(documents: Iterable[Document], tokenizer: Tokenizer,
                     base_dir: str | os.PathLike, output_dir: str | os.PathLike, *,
                     source: str = "", chunk_size: int = 512,
                     show_progress: bool = False) -> BlockStore:
  """Writes to `output_dir` (`base_dir` itself replaces it) the store at `base_dir` with the
  blocks of `documents` after its own, split with its lengths and tokenizer.

  The grown store's fingerprint derives from the base's and the additions', and its lineage
  names the base (with its block count): an index of the base grows by embedding only the new
  blocks (`python -m orqa_realm.embed --grow`). Document ids must stay unique across both.
  """
  base = BlockStore(base_dir)
  base.check_tokenizer(tokenizer)
  output_dir = str(paths.resolve(output_dir))
  if output_dir != base.directory and epath.Path(output_dir).exists():
    raise InputError("already exists: grow into a new directory, or into the base itself",
                     path=output_dir)
  own_files = {MANIFEST} | {f"{name}.bin" for name in base.manifest["columns"]}
  others = sorted(child.name for child in epath.Path(base.directory).iterdir()
                  if child.name not in own_files)
  if output_dir == base.directory and others:
    raise InputError(f"holds {others} beside the store (e.g. its salient spans), which the grown "
                     "store would not carry: grow into a new --output_dir", path=output_dir)
  with atomic_directory(output_dir, OWNER) as partial_dir:
    _write_store(documents, tokenizer, partial_dir, max_block_length=base.max_block_length,
                 max_title_length=base.manifest["max_title_length"], source=source,
                 chunk_size=chunk_size, show_progress=show_progress, base=base)
  return BlockStore(output_dir)


def _write_store(documents: Iterable[Document], tokenizer: Tokenizer, partial_dir: str, *,
                 max_block_length: int, max_title_length: int, source: str, chunk_size: int,
                 show_progress: bool, base: BlockStore | None = None) -> None:
  """Writes every column and the manifest of a block store into `partial_dir`: `base`'s blocks
  and documents first, if given, then those of `documents`."""
  block_token_ids = columns.RaggedColumnWriter(partial_dir, "block_token_ids", np.int32)
  block_token_char_spans = columns.RaggedColumnWriter(partial_dir, "block_token_char_spans",
                                                      np.int32)
  block_text = columns.RaggedColumnWriter(partial_dir, "block_text", np.uint8)
  sentence_token_starts = columns.RaggedColumnWriter(
      partial_dir, "block_sentence_token_starts", np.int32)
  sentence_char_starts = columns.RaggedColumnWriter(
      partial_dir, "block_sentence_char_starts", np.int32)
  block_document = columns.ColumnWriter(partial_dir, "block_document", np.int32)
  block_char_start = columns.ColumnWriter(partial_dir, "block_char_start", np.int64)
  document_ids = columns.RaggedColumnWriter(partial_dir, "document_id", np.uint8)
  document_titles = columns.RaggedColumnWriter(partial_dir, "document_title", np.uint8)
  title_token_ids = columns.RaggedColumnWriter(partial_dir, "title_token_ids", np.int32)

  seen_ids: set[str] = set()
  counts = dict(num_blocks=0, num_documents=0, num_sentences=0, num_tokens=0,
                num_empty_documents=0, num_split_sentences=0)
  if base is not None:
    writers = dict(
        block_token_ids=block_token_ids, block_token_char_spans=block_token_char_spans,
        block_text=block_text, block_sentence_token_starts=sentence_token_starts,
        block_sentence_char_starts=sentence_char_starts, block_document=block_document,
        block_char_start=block_char_start, document_id=document_ids,
        document_title=document_titles, title_token_ids=title_token_ids)
    for name, column in base.columns_by_name().items():
      if isinstance(column, columns.RaggedColumn):
        writers[name].extend(column)
      else:
        for begin in range(0, len(column), columns.COPY_SLICE):
          writers[name].append(column[begin:begin + columns.COPY_SLICE])
    seen_ids = {base.document_id_of(index) for index in range(base.manifest["num_documents"])}
    counts = {key: base.manifest[key] for key in counts}
  progress = tqdm.tqdm(desc="documents", unit="doc", disable=not show_progress)
  for chunk in _chunks(documents, chunk_size):
    spans_per_document = [split_sentences(document.text) for document in chunk]
    # One tokenizer call per chunk: the fast tokenizer batches in Rust.
    sentence_texts = [document.text[start:end]
                      for document, spans in zip(chunk, spans_per_document)
                      for start, end in spans]
    tokenized_sentences = iter(tokenizer.tokenize_with_offsets(sentence_texts))
    titles_tokenized = tokenizer.tokenize([document.title for document in chunk])
    for document, spans, title_ids in zip(chunk, spans_per_document, titles_tokenized):
      if document.doc_id in seen_ids:
        raise InputError(f"duplicate document id {document.doc_id!r}", path=source, field="id")
      seen_ids.add(document.doc_id)
      document_index = counts["num_documents"]
      counts["num_documents"] += 1
      title_ids = title_ids[:max_title_length]
      document_ids.append_string(document.doc_id)
      document_titles.append_string(document.title)
      title_token_ids.append(np.asarray(title_ids, dtype=np.int32))

      budget = max_block_length - 3 - len(title_ids)
      tokenized = [next(tokenized_sentences) for _ in spans]
      # Sentences with no wordpieces (only control characters) carry nothing to pack.
      kept = [(span, pieces) for span, pieces in zip(spans, tokenized) if pieces[0]]
      counts["num_split_sentences"] += sum(len(ids) > budget for _, (ids, _) in kept)
      units = sentence_units([span for span, _ in kept], [pieces for _, pieces in kept], budget)
      if not units:
        counts["num_empty_documents"] += 1
      for block in pack_sentences(units, budget):
        start = block[0].char_start
        token_ids = np.concatenate([np.asarray(s.token_ids, dtype=np.int32) for s in block])
        lengths = [len(s.token_ids) for s in block]
        block_token_ids.append(token_ids)
        block_token_char_spans.append(
            np.concatenate([s.token_char_spans for s in block]).ravel() - start)
        block_text.append_string(document.text[start:block[-1].char_end])
        sentence_token_starts.append(np.cumsum([0] + lengths[:-1], dtype=np.int64))
        sentence_char_starts.append([s.char_start - start for s in block])
        block_document.append([document_index])
        block_char_start.append([start])
        counts["num_blocks"] += 1
        counts["num_sentences"] += len(block)
        counts["num_tokens"] += len(token_ids)
    progress.update(len(chunk))
  progress.close()
  added = counts["num_blocks"] - (len(base) if base is not None else 0)
  if not added:
    documents = counts["num_documents"] - (base.manifest["num_documents"] if base else 0)
    raise InputError(f"no blocks: the corpus has {documents} document{'s' * (documents != 1)}"
                     + (", none with text" if documents else ""), path=source)

  column_entries: dict[str, Any] = {}
  for writer in (block_token_ids, block_token_char_spans, block_text, sentence_token_starts,
                 sentence_char_starts, document_ids, document_titles, title_token_ids):
    column_entries.update(writer.close())
  for writer in (block_document, block_char_start):
    column_entries[writer.name] = writer.close()
  content_hash = hashlib.sha256()
  for name in sorted(column_entries):
    content_hash.update(f"{name}:{column_entries[name]['sha256']}\n".encode())
  fingerprint = content_hash.hexdigest()[:16]
  lineage = []
  if base is not None:
    # Derived from the base's, so that an index can tell the store grew from the one it holds.
    fingerprint = hashlib.sha256(f"{base.fingerprint}+{fingerprint}".encode()).hexdigest()[:16]
    lineage = base.lineage + [dict(
        fingerprint=base.fingerprint, num_blocks=len(base),
        num_documents=base.manifest["num_documents"], source=base.manifest["source"])]
  manifest = dict(
      format=FORMAT, version=VERSION, fingerprint=fingerprint, source=source,
      max_block_length=max_block_length, max_title_length=max_title_length,
      tokenizer=dict(path=tokenizer.model_dir, fingerprint=tokenizer.fingerprint,
                     special_ids=dict(cls=tokenizer.cls_id, sep=tokenizer.sep_id,
                                      pad=tokenizer.pad_id, mask=tokenizer.mask_id)),
      **counts, columns=column_entries, **({"lineage": lineage} if lineage else {}))
  with open(os.path.join(partial_dir, MANIFEST), "w", encoding="utf-8") as f:
    json.dump(manifest, f, indent=2)

"""WordPiece tokenization from a local tokenizer, and packing ids into BERT's fixed-length inputs.

Queries are encoded as `[CLS] q [SEP]` and blocks as `[CLS] title [SEP] text [SEP]` (segments 0
then 1), padded on the right. Packing works on token ids, so text and the pre-tokenized block store
share one path.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from orqa_realm.core.errors import InputError


class TokenBatch(NamedTuple):
  """Fixed-length BERT inputs; a NamedTuple so it passes through `jax.jit` as a pytree."""
  token_ids: np.ndarray  # [batch, length] int32
  segment_ids: np.ndarray  # [batch, length] int32, 0 for the first segment, 1 for the second
  input_mask: np.ndarray  # [batch, length] int32, 1 on real tokens, 0 on right padding


def pack_inputs(
    first: Sequence[Sequence[int]],
    second: Sequence[Sequence[int]] | None,
    max_length: int,
    *,
    cls_id: int,
    sep_id: int,
    pad_id: int,
    max_first_length: int | None = None,
) -> TokenBatch:
  """Packs token ids into `[CLS] first [SEP] (second [SEP])`, truncating and padding to max_length.

  `first` is cut to `max_first_length` (and to what fits); `second` then gets the remaining room.
  """
  num_special = 2 if second is None else 3
  if max_length <= num_special:
    raise ValueError(f"max_length {max_length} leaves no room for tokens")
  first_budget = max_length - num_special
  if max_first_length is not None:
    first_budget = min(first_budget, max_first_length)
  batch_size = len(first)
  token_ids = np.full((batch_size, max_length), pad_id, dtype=np.int32)
  segment_ids = np.zeros((batch_size, max_length), dtype=np.int32)
  input_mask = np.zeros((batch_size, max_length), dtype=np.int32)
  for row in range(batch_size):
    head = list(first[row][:first_budget])
    pieces = [cls_id, *head, sep_id]
    if second is not None:
      pieces += [*second[row][:max_length - num_special - len(head)], sep_id]
      segment_ids[row, len(head) + 2:len(pieces)] = 1
    token_ids[row, :len(pieces)] = pieces
    input_mask[row, :len(pieces)] = 1
  return TokenBatch(token_ids, segment_ids, input_mask)


class Tokenizer:
  """A local BERT WordPiece tokenizer (a directory with tokenizer.json or vocab.txt).

  `hf_tokenizer` is the underlying transformers fast tokenizer, for reference comparisons.
  """

  def __init__(self, model_dir: str | os.PathLike):
    # transformers is imported here so that modules which only pack ids do not pay for it.
    import transformers

    model_dir = os.fspath(model_dir)
    if not any(os.path.isfile(os.path.join(model_dir, name))
               for name in ("tokenizer.json", "vocab.txt")):
      raise InputError("no tokenizer.json or vocab.txt in the tokenizer directory", path=model_dir)
    self.model_dir = model_dir
    self.hf_tokenizer = transformers.BertTokenizerFast.from_pretrained(
        model_dir, local_files_only=True)
    self.cls_id = self.hf_tokenizer.cls_token_id
    self.sep_id = self.hf_tokenizer.sep_token_id
    self.pad_id = self.hf_tokenizer.pad_token_id
    self.mask_id = self.hf_tokenizer.mask_token_id
    self.vocab_size = len(self.hf_tokenizer.get_vocab())
    self.fingerprint = self._fingerprint()

  def _fingerprint(self) -> str:
    """A hash of the vocabulary and the normaliser (lowercasing, accents): what decides the ids."""
    vocab = self.hf_tokenizer.get_vocab()
    backend = json.loads(self.hf_tokenizer.backend_tokenizer.to_str())
    digest = hashlib.sha256()
    digest.update("\n".join(sorted(vocab, key=vocab.__getitem__)).encode("utf-8"))
    digest.update(json.dumps(backend.get("normalizer"), sort_keys=True).encode("utf-8"))
    return digest.hexdigest()[:16]

  def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
    """WordPiece ids of each text, without special tokens."""
    if not texts:  # transformers fails on an empty batch
      return []
    return self.hf_tokenizer(list(texts), add_special_tokens=False)["input_ids"]

  def tokenize_with_offsets(
      self, texts: Sequence[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """WordPiece ids and the character span of each piece, for each text."""
    if not texts:  # transformers fails on an empty batch
      return []
    encoded = self.hf_tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    return list(zip(encoded["input_ids"], encoded["offset_mapping"]))

  def decode(self, token_ids: Sequence[int]) -> str:
    """Text of WordPiece ids with the '##' continuations joined."""
    return self.hf_tokenizer.decode(list(token_ids), skip_special_tokens=True)

  def pack(self, first, second=None, *, max_length: int,
           max_first_length: int | None = None) -> TokenBatch:
    """`pack_inputs` with this tokenizer's special ids."""
    return pack_inputs(first, second, max_length, cls_id=self.cls_id, sep_id=self.sep_id,
                       pad_id=self.pad_id, max_first_length=max_first_length)

  def encode_queries(self, questions: Sequence[str], max_length: int) -> TokenBatch:
    """`[CLS] question [SEP]`, padded to max_length."""
    return self.pack(self.tokenize(questions), max_length=max_length)

  def encode_blocks(self, titles: Sequence[str], texts: Sequence[str], max_length: int,
                    max_title_length: int | None = None) -> TokenBatch:
    """`[CLS] title [SEP] text [SEP]`, the text truncated to what the (capped) title leaves."""
    return self.pack(self.tokenize(titles), self.tokenize(texts), max_length=max_length,
                     max_first_length=max_title_length)

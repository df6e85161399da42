"""The byte-level BPE tokenizer of a decoder LM, built by `transformers` from a GGUF's vocabulary
and merges or read from a Hugging Face directory, and the two layouts the decoder reads: prompts
padded on the left (generation) and sequences padded on the right (teacher forcing).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from orqa_realm.core.errors import InputError


class DecoderBatch(NamedTuple):
  token_ids: np.ndarray  # [batch, length] int32
  input_mask: np.ndarray  # [batch, length] int32, 1 on real tokens


def _pad(sequences: Sequence[Sequence[int]], pad_id: int, length: int | None,
         left: bool) -> DecoderBatch:
  """`sequences` padded to `length` (default: the longest) on the left or the right."""
  length = length or max(len(sequence) for sequence in sequences)
  token_ids = np.full((len(sequences), length), pad_id, np.int32)
  input_mask = np.zeros((len(sequences), length), np.int32)
  for row, sequence in enumerate(sequences):
    if len(sequence) > length:
      raise ValueError(f"a sequence of {len(sequence)} tokens does not fit in {length}")
    columns = slice(length - len(sequence), length) if left else slice(0, len(sequence))
    token_ids[row, columns] = sequence
    input_mask[row, columns] = 1
  return DecoderBatch(token_ids, input_mask)


def pad_left(sequences: Sequence[Sequence[int]], pad_id: int,
             length: int | None = None) -> DecoderBatch:
  """Prompts aligned on their last token: [pad ... pad, t_0 ... t_n]."""
  return _pad(sequences, pad_id, length, left=True)


def pad_right(sequences: Sequence[Sequence[int]], pad_id: int,
              length: int | None = None) -> DecoderBatch:
  """Sequences aligned on their first token: [t_0 ... t_n, pad ... pad]."""
  return _pad(sequences, pad_id, length, left=False)


def check_prompt_template(prompt: str, flag: str) -> None:
  """Refuses a prompt template naming anything but {title} and {text}."""
  try:
    prompt.format(title="", text="")
  except (KeyError, IndexError, ValueError) as e:
    raise InputError(f"the prompt may name only {{title}} and {{text}}: {e}", field=flag) from e


class DecoderTokenizer:
  """A decoder's tokenizer from a GGUF file or a Hugging Face directory.

  `hf_tokenizer` is the underlying transformers tokenizer, for reference comparisons.
  """

  def __init__(self, path: str | os.PathLike):
    # transformers is imported here so that modules which only pad ids do not pay for it.
    import transformers

    path = os.fspath(path)
    if os.path.isdir(path):
      self.hf_tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    elif os.path.isfile(path):
      self.hf_tokenizer = transformers.AutoTokenizer.from_pretrained(
          os.path.dirname(path) or ".", gguf_file=os.path.basename(path), local_files_only=True)
    else:
      raise InputError("no such GGUF file or tokenizer directory", path=path)
    self.path = path
    self.eos_id = self.hf_tokenizer.eos_token_id
    self.pad_id = (self.hf_tokenizer.pad_token_id if self.hf_tokenizer.pad_token_id is not None
                   else self.eos_id)
    if self.eos_id is None:
      raise InputError("the tokenizer names no end-of-sequence token", path=path)
    self.vocab_size = len(self.hf_tokenizer)
    self.fingerprint = self._fingerprint()

  def _fingerprint(self) -> str:
    """A hash of the vocabulary and the merges: what decides the ids."""
    vocab = self.hf_tokenizer.get_vocab()
    digest = hashlib.sha256()
    digest.update("\n".join(sorted(vocab, key=vocab.__getitem__)).encode("utf-8"))
    digest.update(self.hf_tokenizer.backend_tokenizer.to_str().encode("utf-8"))
    return digest.hexdigest()[:16]

  def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
    """Ids of each text, without special tokens."""
    if not texts:  # transformers fails on an empty batch
      return []
    return self.hf_tokenizer(list(texts), add_special_tokens=False)["input_ids"]

  def chat_prompt(self, user_message: str) -> list[int]:
    """Ids of a one-turn chat by the model's own template, ready for the assistant's reply."""
    return list(self.hf_tokenizer.apply_chat_template(
        [{"role": "user", "content": user_message}], add_generation_prompt=True, tokenize=True,
        return_dict=False))

  def decode(self, token_ids: Sequence[int]) -> str:
    """Text of ids, special tokens (end of sequence, padding) left out."""
    return self.hf_tokenizer.decode(list(token_ids), skip_special_tokens=True)

"""Query and block encoding against the Hugging Face tokenizer's own pair encoding."""

import numpy as np
import pytest

from orqa_realm.data.tokenization import Tokenizer, pack_inputs
from orqa_realm.core.errors import InputError

QUESTIONS = ["Which NFL team represented the AFC at Super Bowl 50?",
             "What is the name of the region the Normans gave their name to?"]
TITLES = ["Super Bowl 50", "Normans"]
TEXTS = ["Super Bowl 50 was an American football game to determine the champion of the NFL.",
         "The Normans were the people who in the 10th and 11th centuries gave their name to "
         "Normandy, a region in France. " * 8]


def hf_encode(tokenizer, first, second, max_length):
  kwargs = dict(max_length=max_length, padding="max_length", return_tensors="np",
                truncation="only_second" if second is not None else True)
  return (tokenizer.hf_tokenizer(first, second, **kwargs) if second is not None
          else tokenizer.hf_tokenizer(first, **kwargs))


def test_queries_match_hugging_face(tokenizer):
  ours = tokenizer.encode_queries(QUESTIONS, max_length=12)  # truncates the longer question
  theirs = hf_encode(tokenizer, QUESTIONS, None, 12)
  np.testing.assert_array_equal(ours.token_ids, theirs["input_ids"])
  np.testing.assert_array_equal(ours.segment_ids, theirs["token_type_ids"])
  np.testing.assert_array_equal(ours.input_mask, theirs["attention_mask"])


@pytest.mark.parametrize("max_length", [64, 288])
def test_blocks_match_hugging_face_pairs(tokenizer, max_length):
  ours = tokenizer.encode_blocks(TITLES, TEXTS, max_length=max_length)
  theirs = hf_encode(tokenizer, TITLES, TEXTS, max_length)
  np.testing.assert_array_equal(ours.token_ids, theirs["input_ids"])
  np.testing.assert_array_equal(ours.segment_ids, theirs["token_type_ids"])
  np.testing.assert_array_equal(ours.input_mask, theirs["attention_mask"])
  assert ours.token_ids.dtype == np.int32


def test_title_cap_leaves_room_for_text():
  batch = pack_inputs([[7] * 50], [[9] * 50], 20, cls_id=1, sep_id=2, pad_id=0,
                      max_first_length=5)
  np.testing.assert_array_equal(batch.token_ids[0], [1] + [7] * 5 + [2] + [9] * 12 + [2])
  np.testing.assert_array_equal(batch.segment_ids[0], [0] * 7 + [1] * 13)


def test_fingerprint_depends_on_vocabulary(minilm_dir, tokenizer, tmp_path):
  assert Tokenizer(minilm_dir).fingerprint == tokenizer.fingerprint
  vocab = open(f"{minilm_dir}/vocab.txt", encoding="utf-8").read().splitlines()
  vocab[2000], vocab[2001] = vocab[2001], vocab[2000]
  (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
  assert Tokenizer(tmp_path).fingerprint != tokenizer.fingerprint


def test_missing_tokenizer_files(tmp_path):
  with pytest.raises(InputError, match="no tokenizer.json or vocab.txt"):
    Tokenizer(tmp_path)

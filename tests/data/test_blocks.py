"""Block packing on real SQuAD paragraphs, the store's round trip, and its refusals."""

import json
import os

import numpy as np
import pytest

from orqa_realm.data import blocks
from orqa_realm.data.documents import Document, load_documents
from orqa_realm.core.errors import InputError
from tests.conftest import DEMO_SQUAD


@pytest.fixture(scope="module")
def squad_documents():
  return list(load_documents(f"squad:{DEMO_SQUAD}"))


def test_no_encoded_block_exceeds_max_length(squad_block_store):
  store = squad_block_store
  lengths = np.array([len(store.title_token_ids(b)) + len(store.token_ids(b)) + 3
                      for b in range(len(store))])
  assert lengths.max() <= 288
  encoded = store.encode(range(len(store)))
  assert encoded.token_ids.shape == (len(store), 288)
  # Nothing was truncated: every block ends with its own [SEP] after all of its text.
  assert (encoded.input_mask.sum(1) == lengths).all()


def test_every_sentence_is_in_exactly_one_block(squad_block_store, squad_documents, tokenizer):
  """Per document, the blocks' sentences are exactly the document's sentences, in order."""
  store = squad_block_store
  blocks_by_document = {}
  for b in range(len(store)):
    blocks_by_document.setdefault(store.document_index(b), []).append(b)
  assert sorted(blocks_by_document) == list(range(len(squad_documents)))
  for document_index, document in enumerate(squad_documents):
    stored_sentences = []
    for b in blocks_by_document[document_index]:
      text, char_starts = store.text(b), store.sentence_char_starts(b)
      ends = list(char_starts[1:]) + [len(text)]
      stored_sentences += [text[start:end].strip() for start, end in zip(char_starts, ends)]
      assert store.document_id(b) == document.doc_id
      offset = store.char_start(b)
      assert document.text[offset:offset + len(text)] == text
    expected = [document.text[start:end].strip()
                for start, end in blocks.split_sentences(document.text)]
    assert stored_sentences == expected, document.doc_id


def test_token_sentence_boundaries_match_tokenized_sentences(squad_block_store, tokenizer):
  store = squad_block_store
  for b in range(0, len(store), 97):
    text, char_starts = store.text(b), store.sentence_char_starts(b)
    token_starts, token_ids = store.sentence_token_starts(b), store.token_ids(b)
    ends = list(char_starts[1:]) + [len(text)]
    token_ends = list(token_starts[1:]) + [len(token_ids)]
    for i, sentence in enumerate(tokenizer.tokenize([text[s:e] for s, e in zip(char_starts, ends)])):
      assert list(token_ids[token_starts[i]:token_ends[i]]) == sentence


def test_wordpiece_char_spans_cover_their_pieces(squad_block_store, tokenizer):
  """Each wordpiece's span in the block text spells the piece (after the tokenizer's own
  normalisation: lowercase, no accents; without '##'), and the spans of a whole block are what
  tokenizing its text again gives."""
  store = squad_block_store
  normalize = tokenizer.hf_tokenizer.backend_tokenizer.normalizer.normalize_str
  vocabulary = {index: piece for piece, index in tokenizer.hf_tokenizer.get_vocab().items()}
  for b in range(0, len(store), 53):
    text, spans, token_ids = store.text(b), store.token_char_spans(b), store.token_ids(b)
    assert spans.shape == (len(token_ids), 2)
    assert np.all(np.diff(spans[:, 0]) > 0) and np.all(spans[:, 1] > spans[:, 0])
    for (start, end), token in zip(spans, token_ids):
      piece = vocabulary[int(token)].removeprefix("##")
      if piece != "[UNK]":
        assert normalize(text[start:end]) == piece, (b, text[start:end], piece)
    (retokenized_ids, retokenized_spans), = tokenizer.tokenize_with_offsets([text])
    assert retokenized_ids == list(token_ids)
    assert [tuple(span) for span in spans] == [tuple(span) for span in retokenized_spans]


def test_titles_are_present(squad_block_store):
  store = squad_block_store
  assert store.title(0) == "Super Bowl 50"
  assert all(len(store.title_token_ids(b)) > 0 for b in range(len(store)))
  encoded = store.encode([0])
  title_length = len(store.title_token_ids(0))
  assert list(encoded.token_ids[0, 1:1 + title_length]) == list(store.title_token_ids(0))
  assert store.manifest["num_documents"] == 1572


def test_long_sentence_is_split_into_block_sized_pieces(tokenizer, tmp_path):
  sentence = "The quick brown fox jumps over the lazy dog near the river bank " * 12
  documents = [Document("long", "Fox", sentence.strip() + ". A short ending sentence.")]
  store = blocks.build_block_store(documents, tokenizer, tmp_path / "store", max_block_length=32,
                                   max_title_length=8)
  assert store.manifest["num_split_sentences"] == 1
  assert len(store) > 5
  for b in range(len(store)):
    assert len(store.token_ids(b)) + len(store.title_token_ids(b)) + 3 <= 32
  all_ids = np.concatenate([store.token_ids(b) for b in range(len(store))])
  expected = tokenizer.tokenize([sentence.strip() + "."])[0] + \
      tokenizer.tokenize(["A short ending sentence."])[0]
  assert list(all_ids) == expected


def test_pack_sentences_is_greedy():
  units = [blocks.Sentence([1] * n, 0, 0, np.zeros((n, 2), np.int64)) for n in (4, 3, 5, 1, 6)]
  packed = blocks.pack_sentences(units, budget=8)
  assert [[len(u.token_ids) for u in block] for block in packed] == [[4, 3], [5, 1], [6]]


def test_empty_documents_give_no_blocks(tokenizer, tmp_path):
  documents = [Document("a", "A", "   "), Document("b", "B", "One sentence here.")]
  store = blocks.build_block_store(documents, tokenizer, tmp_path / "store")
  assert len(store) == 1 and store.document_id(0) == "b"
  assert store.manifest["num_empty_documents"] == 1


def test_reloaded_store_is_identical(squad_block_store):
  reloaded = blocks.BlockStore(squad_block_store.directory)
  assert reloaded.fingerprint == squad_block_store.fingerprint
  original, again = squad_block_store.block(100), reloaded.block(100)
  assert (again.text, again.title, again.document_id) == (
      original.text, original.title, original.document_id)
  np.testing.assert_array_equal(reloaded.token_ids(100), squad_block_store.token_ids(100))


def test_store_refuses_mismatched_embeddings_and_tokenizers(squad_block_store, minilm_dir, tmp_path):
  store = squad_block_store
  store.check_matches(num_rows=len(store), fingerprint=store.fingerprint, source="emb.npy")
  with pytest.raises(InputError, match=r"emb\.npy, field 'block_store': built from a block store "
                                       r"with 10 blocks"):
    store.check_matches(num_rows=10, fingerprint=store.fingerprint, source="emb.npy")
  with pytest.raises(InputError, match="fingerprint 0000"):
    store.check_matches(num_rows=len(store), fingerprint="0000", source="emb.npy")
  from orqa_realm.data.tokenization import Tokenizer
  vocab = open(f"{minilm_dir}/vocab.txt", encoding="utf-8").read().splitlines()
  (tmp_path / "vocab.txt").write_text("\n".join(vocab[:-1]) + "\n", encoding="utf-8")
  with pytest.raises(InputError, match="field 'tokenizer'"):
    store.check_tokenizer(Tokenizer(tmp_path))


def test_truncated_column_is_refused(tokenizer, tmp_path):
  store = blocks.build_block_store([Document("d", "T", "Some text. More text.")], tokenizer,
                                   tmp_path / "store")
  path = os.path.join(store.directory, "block_token_ids.bin")
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) - 4)
  with pytest.raises(InputError, match=r"block_token_ids\.bin: file has .* bytes but the manifest"):
    blocks.BlockStore(store.directory)


def test_not_a_store_and_existing_output(tokenizer, tmp_path):
  with pytest.raises(InputError, match="not a block store"):
    blocks.BlockStore(tmp_path)
  (tmp_path / "manifest.json").write_text(json.dumps({"format": "other", "version": 1}))
  with pytest.raises(InputError, match="field 'format'"):
    blocks.BlockStore(tmp_path)
  with pytest.raises(InputError, match="already exists"):
    blocks.build_block_store([], tokenizer, tmp_path)


def test_duplicate_document_ids_are_refused(tokenizer, tmp_path):
  documents = [Document("same", "A", "One."), Document("same", "B", "Two.")]
  with pytest.raises(InputError, match="duplicate document id 'same'"):
    blocks.build_block_store(documents, tokenizer, tmp_path / "store", source="corpus.jsonl")
  assert os.listdir(tmp_path) == []  # neither a store nor a partial build is left behind


def test_sentence_spans_are_character_offsets_in_non_ascii_text():
  text = "Beyoncé sang in Zürich. Chopin was born in Żelazowa Wola. It rained in Łódź."
  spans = blocks.split_sentences(text)
  assert [text[s:e] for s, e in spans] == [
      "Beyoncé sang in Zürich.", "Chopin was born in Żelazowa Wola.", "It rained in Łódź."]

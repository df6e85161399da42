"""A store grown with new documents equals one built from all of them, row for row, and carries
a fingerprint derived from its base's and a lineage naming the base."""

import itertools

import numpy as np
import pytest

from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import BlockStore, build_block_store, grow_block_store
from orqa_realm.data.documents import Document, load_documents
from tests.conftest import DEMO_SQUAD


@pytest.fixture(scope="module")
def documents():
  return list(itertools.islice(load_documents(f"squad:{DEMO_SQUAD}"), 90))


@pytest.fixture(scope="module")
def grown(documents, tokenizer, tmp_path_factory):
  """(base store of 60 paragraphs, the base grown by 30 more, a store built from all 90)."""
  directory = tmp_path_factory.mktemp("growing")
  base = build_block_store(documents[:60], tokenizer, directory / "base", max_block_length=64,
                           source="first 60")
  grown_store = grow_block_store(documents[60:], tokenizer, base.directory, directory / "grown",
                                 source="next 30")
  whole = build_block_store(documents, tokenizer, directory / "whole", max_block_length=64,
                            source="all 90")
  return base, grown_store, whole


def test_a_grown_store_holds_its_base_then_the_additions_as_one_built_whole(grown):
  base, grown_store, whole = grown
  assert len(grown_store) == len(whole) > len(base)
  assert grown_store.manifest["num_documents"] == 90 and grown_store.max_block_length == 64
  for block in range(len(whole)):
    np.testing.assert_array_equal(grown_store.token_ids(block), whole.token_ids(block))
    np.testing.assert_array_equal(grown_store.token_char_spans(block),
                                  whole.token_char_spans(block))
    np.testing.assert_array_equal(grown_store.sentence_token_starts(block),
                                  whole.sentence_token_starts(block))
    assert (grown_store.text(block), grown_store.document_id(block), grown_store.title(block),
            grown_store.char_start(block)) == (whole.text(block), whole.document_id(block),
                                               whole.title(block), whole.char_start(block))
  for key in ("num_blocks", "num_sentences", "num_tokens", "num_split_sentences"):
    assert grown_store.manifest[key] == whole.manifest[key], key


def test_the_fingerprint_derives_from_the_base_and_the_lineage_names_it(grown):
  base, grown_store, whole = grown
  assert grown_store.fingerprint not in (base.fingerprint, whole.fingerprint)
  assert grown_store.lineage == [dict(fingerprint=base.fingerprint, num_blocks=len(base),
                                      num_documents=60, source="first 60")]
  assert grown_store.ancestor(base.fingerprint)["num_blocks"] == len(base)
  assert grown_store.ancestor(whole.fingerprint) is None and whole.lineage == []


def test_growing_in_place_and_growing_twice(grown, documents, tokenizer, tmp_path):
  base, grown_store, _ = grown
  in_place = build_block_store(documents[:60], tokenizer, tmp_path / "store", max_block_length=64,
                               source="first 60")
  grow_block_store(documents[60:75], tokenizer, in_place.directory, in_place.directory)
  twice = grow_block_store(documents[75:], tokenizer, in_place.directory, in_place.directory)
  assert [entry["num_blocks"] for entry in twice.lineage][0] == len(base)
  assert len(twice.lineage) == 2 and len(twice) == len(grown_store)
  assert BlockStore(tmp_path / "store").fingerprint == twice.fingerprint


def test_bad_additions_are_refused_and_the_base_is_kept(grown, documents, tokenizer, tmp_path):
  base, _, _ = grown
  with pytest.raises(InputError, match="duplicate document id"):
    grow_block_store(documents[50:70], tokenizer, base.directory, tmp_path / "duplicates")
  with pytest.raises(InputError, match="no blocks"):
    grow_block_store([Document("new", "Empty", "")], tokenizer, base.directory, tmp_path / "e")
  with pytest.raises(InputError, match="already exists"):
    grow_block_store(documents[60:], tokenizer, base.directory, tmp_path)
  in_place = build_block_store(documents[:60], tokenizer, tmp_path / "annotated",
                               max_block_length=64)
  (tmp_path / "annotated" / "salient_spans").mkdir()
  with pytest.raises(InputError, match=r"holds \['salient_spans'\] beside the store"):
    grow_block_store(documents[60:], tokenizer, in_place.directory, in_place.directory)
  assert not (tmp_path / "duplicates").exists()
  assert BlockStore(base.directory).fingerprint == base.fingerprint

"""Growing an index with a grown store: the new version equals embedding the whole grown store
(exact search returns the same blocks), a ScaNN index grows by upsert and finds the new blocks,
and additions from another encoder, or to an index of a store that is not an ancestor, are
refused."""

import dataclasses
import itertools
import os

import jax
import numpy as np
import pytest

from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import build_block_store, grow_block_store
from orqa_realm.data.documents import load_documents
from orqa_realm.encode.embedding import (EmbedSettings, IndexConfig, embed_and_publish,
                                         embed_blocks)
from orqa_realm.encode.growing import grow_and_publish
from orqa_realm.index.exact import ExactSearcher
from orqa_realm.index.handle import open_index
from orqa_realm.index.scann_index import DOCIDS_FILE, ScannConfig
from orqa_realm.index.storage import SCANN_DIR, IndexRoot, load_embeddings
from orqa_realm.modeling import partitioning, retriever
from tests.conftest import DEMO_SQUAD
from tests.tasks.tiny_ict import TINY_RETRIEVER

EMBEDDING = EmbedSettings(embed_batch_size=64, embed_dtype="float32")


@pytest.fixture(scope="module")
def stores(tokenizer, tmp_path_factory):
  """(base store: 60 paragraphs, grown by 40 more, a store of 50 paragraphs it did not grow
  from)."""
  documents = list(itertools.islice(load_documents(f"squad:{DEMO_SQUAD}"), 100))
  directory = tmp_path_factory.mktemp("growing_index")
  base = build_block_store(documents[:60], tokenizer, directory / "base", max_block_length=64)
  grown = grow_block_store(documents[60:], tokenizer, base.directory, directory / "grown")
  other = build_block_store(documents[:50], tokenizer, directory / "other", max_block_length=64)
  return base, grown, other


@pytest.fixture(scope="module")
def params():
  return partitioning.unbox(retriever.init_params(TINY_RETRIEVER, jax.random.key(0)))


def index_config(directory, backend="exact"):
  return IndexConfig(index_dir=str(directory), backend=backend, embedding=EMBEDDING,
                     scann=ScannConfig(reorder_num_neighbors=50))


def test_a_grown_index_equals_embedding_the_grown_store(stores, params, tmp_path):
  base, grown, _ = stores
  config = index_config(tmp_path / "index")
  embed_and_publish(base, params, TINY_RETRIEVER, config, checkpoint_step=None, run=None)
  version = grow_and_publish(grown, params, TINY_RETRIEVER, config, checkpoint_step=None,
                             run=None)
  assert (version.version, version.num_rows, version.store_fingerprint) == (
      2, len(grown), grown.fingerprint)
  assert version.metadata["grown_from"] == dict(version=1, num_rows=len(base),
                                                store_fingerprint=base.fingerprint)
  whole = embed_blocks(grown, params, TINY_RETRIEVER, batch_size=64, dtype=np.float32)
  np.testing.assert_allclose(load_embeddings(version), whole, atol=1e-5)
  queries = np.random.default_rng(0).normal(size=(20, whole.shape[1])).astype(np.float32)
  grown_search = open_index(version, grown).searcher.search(queries, 10)
  np.testing.assert_array_equal(grown_search.ids, ExactSearcher(whole).search(queries, 10).ids)
  with pytest.raises(InputError, match="already holds every block"):
    grow_and_publish(grown, params, TINY_RETRIEVER, config, checkpoint_step=None, run=None)


def test_additions_from_another_encoder_or_another_store_are_refused(stores, params, tmp_path):
  base, grown, other = stores
  config = index_config(tmp_path / "index")
  embed_and_publish(base, params, TINY_RETRIEVER, config, checkpoint_step=None, run=None)
  with pytest.raises(InputError, match="embedded by pretrained weights; the new blocks would be "
                     "embedded by checkpoint 3 of the run /runs/other"):
    grow_and_publish(grown, params, TINY_RETRIEVER, config, checkpoint_step=3,
                     run=dict(workdir="/runs/other", run_id="abc"))
  with pytest.raises(InputError, match="block_length"):
    grow_and_publish(grown, params, dataclasses.replace(TINY_RETRIEVER, block_length=32), config,
                     checkpoint_step=None, run=None)
  in_bfloat16 = dataclasses.replace(config, embedding=EmbedSettings(embed_dtype="bfloat16"))
  with pytest.raises(InputError, match="embedded in float32, the new blocks would be in bfloat16"):
    grow_and_publish(grown, params, TINY_RETRIEVER, in_bfloat16, checkpoint_step=None, run=None)
  other_config = index_config(tmp_path / "other_index")
  embed_and_publish(other, params, TINY_RETRIEVER, other_config, checkpoint_step=None, run=None)
  with pytest.raises(InputError, match="did not grow from"):
    grow_and_publish(grown, params, TINY_RETRIEVER, other_config, checkpoint_step=None, run=None)
  assert IndexRoot(str(tmp_path / "index")).versions() == [1]


def test_a_scann_index_grows_by_upsert(stores, params, tmp_path):
  """Its recall is measured on real embeddings in tests/index/test_scann.py; here the grown
  version holds the previous version's ScaNN index with the new rows, and no pickle."""
  base, grown, _ = stores
  first = embed_and_publish(base, params, TINY_RETRIEVER,
                            index_config(tmp_path / "index", backend="scann"),
                            checkpoint_step=None, run=None)
  # Grown by a command that searches exactly, the version keeps its ScaNN index all the same.
  version = grow_and_publish(grown, params, TINY_RETRIEVER, index_config(tmp_path / "index"),
                             checkpoint_step=None, run=None)
  assert not os.path.exists(os.path.join(version.directory, SCANN_DIR, DOCIDS_FILE))
  assert version.scann_config == first.scann_config
  searcher = open_index(version, grown, backend="scann").searcher
  added = load_embeddings(version)[len(base):]
  expected = open_index(first, base, backend="scann").searcher.with_rows_added(added)
  np.testing.assert_array_equal(searcher.search(added, 5).ids, expected.search(added, 5).ids)
  assert searcher.num_rows == len(grown)

"""Publishing and searching a multi-vector index of a real (small) corpus: the SQuAD slice's
blocks encoded by the tiny ColBERT run. The version records its run and retriever; publishing
into a root of another kind, store or retriever is refused; only the run and checkpoint that
embedded the index may search it; PLAID with every centroid probed finds exact MaxSim's top 10;
the refresher publishes what embed does."""

import dataclasses

import numpy as np
import pytest

from orqa_realm.core import parallel
from orqa_realm.core.errors import InputError
from orqa_realm.encode import multi_vector as encode
from orqa_realm.encode import refresher, runs
from orqa_realm.index import multi_vector_index, storage
from orqa_realm.index.multi_vector_index import MultiVectorStorage
from orqa_realm.index.plaid import PLAIDSettings
from orqa_realm.index.storage import IndexRoot
from orqa_realm.modeling.multi_vector import MEBERTConfig
from tests.conftest import DEMO_SQUAD

MESH = parallel.make_mesh()
STORAGE = MultiVectorStorage(nbits=2, num_centroids=256)


@pytest.fixture(scope="module")
def published(tiny_colbert_run, squad_block_store, tokenizer, tmp_path_factory):
  """The tiny ColBERT's index of the slice, 2-bit compressed with 256 centroids."""
  run = runs.restore_multi_vector_run(tiny_colbert_run, None, MESH)
  index = encode.MultiVectorIndexConfig(
      index_dir=str(tmp_path_factory.mktemp("colbert_index") / "root"),
      storage=STORAGE)
  version = encode.embed_and_publish(squad_block_store, tokenizer, run.params, run.config, index,
                                     checkpoint_step=run.step,
                                     run=runs.run_identity(tiny_colbert_run), mesh=MESH)
  return dict(run=run, index=index, version=version)


def questions() -> list[str]:
  from orqa_realm.data.qa import read_squad  # pylint: disable=g-import-not-at-top
  return [example.question for example in read_squad(DEMO_SQUAD)[::97][:24]]


def test_version_records_its_run_retriever_and_storage(published, squad_block_store):
  version, run = published["version"], published["run"]
  assert version.kind == storage.MULTI_VECTOR and version.num_rows == len(squad_block_store)
  assert version.checkpoint_step == 6 and version.storage_dtype == "residual_2bit"
  assert encode.indexed_retriever(version) == run.config
  assert version.metadata["run"]["run_id"] == run.run_id
  # 16 dimensions x 2 bits + a 2-byte centroid id.
  assert version.details["bytes_per_vector"] == 6 and version.details["num_centroids"] == 256
  assert version.details["num_vectors"] > 20 * len(squad_block_store)


def test_publishing_into_another_kind_store_or_retriever_is_refused(published, squad_block_store,
                                                                   tmp_path):
  run = published["run"]
  dense_root = IndexRoot(tmp_path / "dense")
  dense_root.publish(np.ones((len(squad_block_store), 4), np.float32),
                     store_fingerprint=squad_block_store.fingerprint, checkpoint_step=None)
  with pytest.raises(InputError, match="holds a dense index"):
    encode.check_publishable(dense_root, run.config, squad_block_store, STORAGE)
  colbert_root = IndexRoot(published["index"].index_dir)
  me_bert = MEBERTConfig(run.config.bert, dim=16, query_length=12, block_length=48,
                         num_vectors=4)
  with pytest.raises(InputError, match="another retriever's vectors.*kind: saved 'colbert'"):
    encode.check_publishable(colbert_root, me_bert, squad_block_store, STORAGE)
  longer = dataclasses.replace(run.config, block_length=64)
  with pytest.raises(InputError, match="block_length: saved 48, now 64"):
    encode.check_publishable(colbert_root, longer, squad_block_store, STORAGE)
  encode.check_publishable(colbert_root, dataclasses.replace(run.config, query_length=16),
                           squad_block_store, STORAGE)  # queries read longer: the same blocks
  with pytest.raises(InputError, match="--colbert_nbits=1: 12 dimensions x 1 bits"):
    encode.check_publishable(colbert_root, dataclasses.replace(run.config, dim=12),
                             squad_block_store, MultiVectorStorage(nbits=1))


def test_only_the_embedding_run_and_checkpoint_search_it(published, tiny_cross_encoder_run):
  version, run = published["version"], published["run"]
  encode.check_query_encoder(version, run)
  with pytest.raises(InputError, match="checkpoint 6, the queries would be encoded with "
                     "checkpoint 5"):
    encode.check_query_encoder(version, run._replace(step=5))
  with pytest.raises(InputError, match="embedded from the run .* not from"):
    encode.check_query_encoder(version, run._replace(run_id="another", workdir="/elsewhere"))
  with pytest.raises(InputError, match="is a cross-encoder, where a multi-vector"):
    encode.text_searcher(None, None, encode.MultiVectorSearch(
        run=runs.RunCheckpoint(workdir=tiny_cross_encoder_run),
        index_dir=published["index"].index_dir), "colbert", MESH)


def test_unpruned_plaid_finds_exact_maxsims_top_ten(published, squad_block_store, tokenizer):
  settings = encode.MultiVectorSearch(run=runs.RunCheckpoint(workdir=published["run"].workdir),
                                      index_dir=published["index"].index_dir)
  exact, info = encode.text_searcher(squad_block_store, tokenizer, settings, "colbert", MESH)
  every_centroid = PLAIDSettings(ncells=256, centroid_score_threshold=-np.inf,
                                 ndocs=4 * len(squad_block_store))
  plaid, plaid_info = encode.text_searcher(
      squad_block_store, tokenizer,
      dataclasses.replace(settings, backend="plaid"), "colbert", MESH, every_centroid)
  assert info["backend"] == "exact" and plaid_info["plaid"]["ncells"] == 256
  texts = questions()
  found, expected = plaid.search_texts(texts, 10), exact.search_texts(texts, 10)
  # The same ten blocks (two with scores within float32 rounding may trade places).
  assert [set(row) for row in found.ids] == [set(row) for row in expected.ids]
  np.testing.assert_allclose(found.scores, expected.scores, rtol=1e-4, atol=1e-4)


def test_backends_that_cannot_search_the_index_are_refused(published, squad_block_store,
                                                           tokenizer):
  settings = encode.MultiVectorSearch(run=runs.RunCheckpoint(workdir=published["run"].workdir),
                                      index_dir=published["index"].index_dir)
  with pytest.raises(InputError, match="--retrieval=me_bert, but the run trains colbert"):
    encode.text_searcher(squad_block_store, tokenizer, settings, "me_bert", MESH)
  with pytest.raises(InputError, match="pass --workdir"):
    encode.text_searcher(squad_block_store, tokenizer,
                         dataclasses.replace(settings, run=runs.RunCheckpoint()), "colbert",
                         MESH)


def test_the_refresher_publishes_what_embed_does(published, squad_block_store, tokenizer,
                                                 tmp_path):
  run = published["run"]
  index = dataclasses.replace(published["index"], index_dir=str(tmp_path / "refreshed"))
  worker = refresher.multi_vector_refresher_for_run(
      runs.open_multi_vector_run(run.workdir), squad_block_store, tokenizer, index, mesh=MESH)
  try:
    assert worker.last_indexed_step == -1
    version = worker.refresh(6)
  finally:
    worker.close()
  assert version.kind == storage.MULTI_VECTOR and version.checkpoint_step == 6
  refreshed, embedded = (multi_vector_index.load(v) for v in (version, published["version"]))
  np.testing.assert_array_equal(refreshed.lengths, embedded.lengths)
  np.testing.assert_array_equal(refreshed.compressed.codes, embedded.compressed.codes)
  np.testing.assert_array_equal(refreshed.compressed.residuals, embedded.compressed.residuals)
  # A dense refresher refuses the multi-vector root, before any work.
  with pytest.raises(InputError, match="multi-vector retriever"):
    refresher.refresher_for_run(runs.open_retriever_run(run.workdir), squad_block_store,
                                index)

"""Multi-vector index versions: published whole under the versioned root, read back raw
(float16) or compressed (decompressing as the codec does), their storage in the manifest, and a
version of one kind refused where the other is expected, naming both."""

import numpy as np
import pytest

from orqa_realm.core.errors import InputError
from orqa_realm.index import multi_vector_index, storage
from orqa_realm.index.multi_vector_index import MultiVectorStorage
from orqa_realm.index.multi_vector_search import TokenVectors
from orqa_realm.index.residual_codec import compress, decompress
from orqa_realm.index.storage import IndexRoot
from tests.index.test_residual_codec import clustered_unit_vectors


@pytest.fixture(scope="module")
def corpus():
  lengths = np.random.default_rng(0).integers(0, 12, size=150)
  return TokenVectors(clustered_unit_vectors(int(lengths.sum()), dim=16, clusters=32), lengths)


def publish(root, corpus, nbits):
  return multi_vector_index.publish(
      root, corpus, MultiVectorStorage(nbits=nbits, num_centroids=32 if nbits else 0),
      normalized=True,
      store_fingerprint="f" * 16, checkpoint_step=7, metadata=dict(note="test"))


def test_uncompressed_version_holds_float16_vectors(corpus, tmp_path):
  version = publish(IndexRoot(tmp_path / "root"), corpus, nbits=0)
  assert version.kind == storage.MULTI_VECTOR and version.storage_dtype == "float16"
  assert version.num_rows == 150 and version.embedding_size == 16
  assert version.details["bytes_per_vector"] == 32 and version.metadata == dict(note="test")
  loaded = multi_vector_index.load(IndexRoot(tmp_path / "root").latest())
  np.testing.assert_array_equal(loaded.lengths, corpus.lengths)
  np.testing.assert_array_equal(loaded.token_vectors().vectors,
                                corpus.vectors.astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_compressed_version_decompresses_as_its_codec(corpus, tmp_path, nbits):
  version = publish(IndexRoot(tmp_path / "root"), corpus, nbits=nbits)
  assert version.storage_dtype == f"residual_{nbits}bit"
  assert version.details["bytes_per_vector"] == 2 + 16 * nbits // 8
  assert version.details["num_centroids"] == 32
  loaded = multi_vector_index.load(version)
  assert loaded.vectors is None and loaded.codec.nbits == nbits
  np.testing.assert_array_equal(loaded.compressed.codes,
                                compress(loaded.codec, corpus.vectors).codes)
  restored = loaded.token_vectors().vectors
  np.testing.assert_array_equal(restored, decompress(loaded.codec, loaded.compressed))
  assert np.mean(np.sum(restored * corpus.vectors, axis=1)) > 0.9


def test_a_version_of_one_kind_is_refused_as_the_other(corpus, tmp_path):
  multi = publish(IndexRoot(tmp_path / "multi"), corpus, nbits=2)
  with pytest.raises(InputError, match="holds a multi-vector index, where a dense index"):
    storage.load_embeddings(multi)
  dense = IndexRoot(tmp_path / "dense").publish(np.ones((150, 16), np.float32),
                                                store_fingerprint="f" * 16, checkpoint_step=None)
  assert dense.kind == storage.DENSE
  with pytest.raises(InputError, match="holds a dense index, where a multi-vector index"):
    multi_vector_index.load(dense)


def test_bad_storage_settings_are_refused():
  with pytest.raises(InputError, match="--colbert_nbits=3"):
    MultiVectorStorage(nbits=3)
  with pytest.raises(InputError, match="--colbert_kmeans_iterations=0 must be at least 1"):
    MultiVectorStorage(kmeans_iterations=0)
  with pytest.raises(InputError, match="--colbert_nbits=0 turns off"):
    MultiVectorStorage(nbits=0, num_centroids=64)
  with pytest.raises(InputError, match="--colbert_nbits=4: 5 dimensions x 4 bits"):
    MultiVectorStorage(nbits=4).check_fits(5)
  MultiVectorStorage(nbits=4).check_fits(6)  # 3 bytes


def test_a_damaged_version_names_the_file(corpus, tmp_path):
  version = publish(IndexRoot(tmp_path / "root"), corpus, nbits=2)
  codes = tmp_path / "root" / "versions" / "000001" / "codes.npy"
  np.save(codes, np.zeros(3, np.uint16))
  with pytest.raises(InputError, match="codes.npy.*shape"):
    multi_vector_index.load(version)

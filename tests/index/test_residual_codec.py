"""ColBERTv2's residual compression: bit packing round-trips, each vector's code is its nearest
centroid, every residual value restored within its bucket, and the restored vectors' error
shrinking with the bits (bounds per nbits on clustered unit vectors like ColBERT's)."""

import numpy as np
import pytest

from orqa_realm.index import residual_codec
from orqa_realm.index.residual_codec import (CompressedVectors, compress, decompress,
                                             default_num_centroids, train_codec)


def clustered_unit_vectors(num_vectors=6000, dim=32, clusters=64, spread=0.35, seed=0):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(clusters, dim))
  vectors = centers[rng.integers(clusters, size=num_vectors)] / np.sqrt(dim) + spread * rng.normal(
      size=(num_vectors, dim)) / np.sqrt(dim)
  return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors():
  return clustered_unit_vectors()


@pytest.fixture(scope="module")
def codecs(vectors):
  return {nbits: train_codec(vectors[:3000], num_centroids=64, nbits=nbits, normalized=True)
          for nbits in (1, 2, 4)}


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_packing_round_trips(nbits):
  buckets = np.random.default_rng(nbits).integers(0, 2 ** nbits, size=(7, 16)).astype(np.uint8)
  packed = residual_codec._pack(buckets, nbits)
  assert packed.shape == (7, 16 * nbits // 8) and packed.dtype == np.uint8
  np.testing.assert_array_equal(residual_codec._unpack(packed, nbits, 16), buckets)


def test_codes_are_the_nearest_centroids(vectors, codecs):
  codec = codecs[2]
  compressed = compress(codec, vectors[:500], batch_size=128)
  distances = ((vectors[:500, None, :] - codec.centroids[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(compressed.codes, distances.argmin(1))
  assert compressed.codes.dtype == np.uint16
  assert compressed.bytes_per_vector == 2 + 32 * 2 // 8
  np.testing.assert_allclose(np.linalg.norm(codec.centroids, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_each_residual_value_is_restored_within_its_bucket(vectors, codecs, nbits):
  codec = codecs[nbits]
  unnormalized = codec._replace(normalized=False)  # the raw sum, before normalising again
  compressed = compress(codec, vectors)
  restored = decompress(unnormalized, compressed)
  residuals = vectors - codec.centroids[compressed.codes]
  errors = np.abs(restored - codec.centroids[compressed.codes] - residuals)
  edges = np.concatenate([[-np.inf], codec.bucket_cutoffs, [np.inf]])
  buckets = np.searchsorted(codec.bucket_cutoffs, residuals, side="right")
  inner = (buckets > 0) & (buckets < 2 ** nbits - 1)
  widths = (edges[1:] - edges[:-1])[buckets]
  assert (errors[inner] <= widths[inner] + 1e-6).all()
  # The weights lie inside their buckets.
  assert ((codec.bucket_weights >= edges[:-1]) & (codec.bucket_weights <= edges[1:])).all()


def test_error_shrinks_with_the_bits(vectors, codecs):
  cosines = {}
  for nbits, codec in codecs.items():
    restored = decompress(codec, compress(codec, vectors))
    np.testing.assert_allclose(np.linalg.norm(restored, axis=1), 1.0, rtol=1e-5)
    cosines[nbits] = float(np.mean(np.sum(restored * vectors, axis=1)))
  centroid_only = float(np.mean(np.sum(
      codecs[1].centroids[compress(codecs[1], vectors).codes] * vectors, axis=1)))
  assert centroid_only < cosines[1] < cosines[2] < cosines[4]
  # Measured 0.946, 0.972, 0.992 (centroids alone: 0.887, k-means from random centroids).
  assert cosines[1] >= 0.94 and cosines[2] >= 0.965 and cosines[4] >= 0.99


def test_default_centroids_follow_colbertv2():
  assert default_num_centroids(1_000_000) == 8192  # 16 sqrt(n) = 16,000 -> 2^13
  assert default_num_centroids(300_000) == 8192  # 8,763 -> 2^13
  assert default_num_centroids(100) == 100
  with pytest.raises(ValueError, match="nbits=3"):
    train_codec(np.zeros((10, 8), np.float32), num_centroids=2, nbits=3, normalized=True)
  assert isinstance(compress(train_codec(clustered_unit_vectors(200, 8, 4), num_centroids=4,
                                         nbits=1, normalized=True), np.ones((1, 8))),
                    CompressedVectors)

"""ColBERTv2's residual compression (Santhanam et al. 2022) of a corpus's token vectors.

Each vector is stored as the id of its nearest centroid (k-means over a sample of the corpus's
vectors) and its residual from that centroid, every dimension quantised to `nbits` bits: the
residual value falls in one of 2^nbits buckets whose cutoffs are quantiles of held-out residual
values, and is restored as the bucket's weight (the quantile at the bucket's middle). Cutoffs and
weights are shared by all dimensions, as ColBERTv2's are. At 128 dimensions a vector costs
2 bytes of centroid id (up to 65,536 centroids) + 16 x nbits bytes of residual: 34 bytes at 2
bits against 256 in float16.

Decompression adds the centroid and the restored residual, and L2-normalises again when the
vectors were normalised (ColBERT's are), as ColBERTv2 does.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from sklearn.cluster import KMeans

NBITS = (1, 2, 4)


class ResidualCodec(NamedTuple):
  """What compresses and restores vectors."""
  centroids: np.ndarray  # [num_centroids, dim] float32
  bucket_cutoffs: np.ndarray  # [2^nbits - 1] float32, increasing
  bucket_weights: np.ndarray  # [2^nbits] float32: the value each bucket restores
  nbits: int
  normalized: bool  # whether vectors (and centroids) are L2-normalised


class CompressedVectors(NamedTuple):
  """Vectors as centroid ids and packed residual buckets."""
  codes: np.ndarray  # [n] uint16 (int32 beyond 65,536 centroids): nearest centroid
  residuals: np.ndarray  # [n, dim x nbits / 8] uint8: each dimension's bucket, bits packed

  @property
  def bytes_per_vector(self) -> int:
    return self.codes.dtype.itemsize + self.residuals.shape[1]


def check_fits(dim: int, nbits: int) -> None:
  """A ValueError unless vectors of `dim` dimensions compress to `nbits` bits each in whole
  bytes."""
  if nbits not in NBITS:
    raise ValueError(f"nbits={nbits} is not one of {NBITS}")
  if dim * nbits % 8:
    raise ValueError(f"{dim} dimensions x {nbits} bits do not fill whole bytes")


def default_num_centroids(num_vectors: int) -> int:
  """ColBERTv2's number of centroids: the power of two at most 16 sqrt(n) (at most n)."""
  target = 16 * math.sqrt(max(num_vectors, 1))
  return int(min(2 ** math.floor(math.log2(target)), num_vectors))


def _normalize(vectors: np.ndarray) -> np.ndarray:
  return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def nearest_centroids(vectors: np.ndarray, centroids: np.ndarray,
                      batch_size: int = 16384) -> np.ndarray:
  """[n] int64 index of each vector's nearest centroid, `batch_size` vectors at a time.

  Euclidean, as k-means assigns: for unit vectors and unit centroids (ColBERT's) it is the
  largest inner product, ColBERT's assignment; for unnormalised ones (the poly-encoder's) the
  nearest is what keeps residuals small."""
  half_norms = 0.5 * np.sum(centroids * centroids, axis=1)  # [c]
  codes = np.empty(len(vectors), np.int64)
  for start in range(0, len(vectors), batch_size):
    batch = np.asarray(vectors[start:start + batch_size], np.float32)
    # argmin |x - c|^2 = argmax x . c - |c|^2 / 2
    codes[start:start + len(batch)] = np.argmax(batch @ centroids.T - half_norms, axis=1)
  return codes


def train_codec(sample: np.ndarray, *, num_centroids: int, nbits: int, normalized: bool,
                seed: int = 0, max_iterations: int = 4,
                heldout_fraction: float = 0.05) -> ResidualCodec:
  """Centroids by k-means (scikit-learn; ColBERTv2's 4 iterations by default) over `sample`
  [n, dim] vectors of the corpus, and bucket cutoffs and weights from the residuals of a
  held-out part of it (ColBERTv2's recipe)."""
  sample = np.asarray(sample, np.float32)
  check_fits(sample.shape[1], nbits)
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(sample))
  num_heldout = max(1, int(len(sample) * heldout_fraction))
  heldout, fitted = sample[order[:num_heldout]], sample[order[num_heldout:]]
  num_centroids = min(num_centroids, len(fitted))
  # Random initial centroids, as faiss's k-means (ColBERT's) starts: k-means++ seeding is
  # sequential over the centroids and took minutes for thousands of them on a 2-core CPU.
  kmeans = KMeans(n_clusters=num_centroids, init="random", n_init=1, max_iter=max_iterations,
                  random_state=seed).fit(fitted)
  centroids = kmeans.cluster_centers_.astype(np.float32)
  if normalized:
    centroids = _normalize(centroids)
  residuals = heldout - centroids[nearest_centroids(heldout, centroids)]
  levels = 2 ** nbits
  cutoffs = np.quantile(residuals, np.arange(1, levels) / levels)
  weights = np.quantile(residuals, (np.arange(levels) + 0.5) / levels)
  return ResidualCodec(centroids, cutoffs.astype(np.float32), weights.astype(np.float32), nbits,
                       normalized)


def _pack(buckets: np.ndarray, nbits: int) -> np.ndarray:
  """[n, dim] bucket ids < 2^nbits -> [n, dim x nbits / 8] uint8, little-endian bits."""
  bits = (buckets[..., None] >> np.arange(nbits, dtype=np.uint8)) & 1  # [n, dim, nbits]
  return np.packbits(bits.reshape(len(buckets), -1), axis=1, bitorder="little")


def _unpack(packed: np.ndarray, nbits: int, dim: int) -> np.ndarray:
  """The inverse of `_pack`: [n, dim] uint8 bucket ids."""
  bits = np.unpackbits(packed, axis=1, count=dim * nbits, bitorder="little")
  bits = bits.reshape(len(packed), dim, nbits)
  return np.sum(bits << np.arange(nbits, dtype=np.uint8), axis=-1, dtype=np.uint8)


def compress(codec: ResidualCodec, vectors: np.ndarray,
             batch_size: int = 16384) -> CompressedVectors:
  """[n, dim] vectors -> their centroid ids and packed residual buckets."""
  vectors = np.asarray(vectors, np.float32)
  code_dtype = np.uint16 if len(codec.centroids) <= 2 ** 16 else np.int32
  codes = nearest_centroids(vectors, codec.centroids, batch_size).astype(code_dtype)
  packed = np.empty((len(vectors), vectors.shape[1] * codec.nbits // 8), np.uint8)
  for start in range(0, len(vectors), batch_size):
    stop = start + batch_size
    residuals = vectors[start:stop] - codec.centroids[codes[start:stop]]
    buckets = np.searchsorted(codec.bucket_cutoffs, residuals, side="right").astype(np.uint8)
    packed[start:stop] = _pack(buckets, codec.nbits)
  return CompressedVectors(codes, packed)


def decompress(codec: ResidualCodec, compressed: CompressedVectors,
               batch_size: int = 65536) -> np.ndarray:
  """[n, dim] float32 vectors restored from their centroid and bucketed residual,
  `batch_size` at a time (the unpacked buckets of a whole corpus would be 8 / nbits times its
  residuals)."""
  dim = codec.centroids.shape[1]
  vectors = np.empty((len(compressed.codes), dim), np.float32)
  for start in range(0, len(vectors), batch_size):
    stop = start + batch_size
    residuals = codec.bucket_weights[_unpack(compressed.residuals[start:stop], codec.nbits, dim)]
    restored = codec.centroids[compressed.codes[start:stop].astype(np.int64)] + residuals
    vectors[start:stop] = _normalize(restored) if codec.normalized else restored
  return vectors

"""Multi-vector index versions: every block's vectors (ColBERT's tokens, ME-BERT's or the
poly-encoder's m vectors) under the same versioned root as dense embeddings (`storage.py`:
atomic LATEST, the block store's fingerprint, the checkpoint step).

    versions/000003/   manifest.json (kind "multi_vector"), lengths.npy, and either
                       vectors.npy (float16, uncompressed: --colbert_nbits=0) or
                       centroids.npy, bucket_cutoffs.npy, bucket_weights.npy, codes.npy,
                       residuals.npy (ColBERTv2's residual compression, `residual_codec.py`)

The manifest's `multi_vector` entry says how the vectors are stored (nbits, centroids, bytes per
vector); its metadata, what retriever embedded them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import numpy as np
from etils import epath

from orqa_realm.core.config import check_minimum, setting
from orqa_realm.core.errors import InputError
from orqa_realm.index import residual_codec, storage
from orqa_realm.index.multi_vector_search import TokenVectors
from orqa_realm.index.residual_codec import CompressedVectors, ResidualCodec
from orqa_realm.index.storage import IndexRoot, IndexVersion

LENGTHS = "lengths.npy"
VECTORS = "vectors.npy"
CODEC_FILES = dict(centroids="centroids.npy", bucket_cutoffs="bucket_cutoffs.npy",
                   bucket_weights="bucket_weights.npy")
COMPRESSED_FILES = dict(codes="codes.npy", residuals="residuals.npy")


@dataclasses.dataclass(frozen=True)
class MultiVectorStorage:
  """How a multi-vector index stores its vectors."""
  nbits: int = setting(
      2, "Bits per dimension of each vector's residual from its centroid (ColBERTv2's "
      "compression: 1, 2 or 4); 0: float16 vectors, uncompressed.", flag="colbert_nbits")
  num_centroids: int = setting(
      0, "k-means centroids of the compression; 0: ColBERTv2's, the power of two at most "
      "16 sqrt(vectors).", flag="colbert_centroids")
  kmeans_sample: int = setting(
      0, "Vectors sampled for k-means; 0: 64 per centroid (at most all).",
      flag="colbert_kmeans_sample")
  kmeans_iterations: int = setting(4, "k-means iterations (ColBERTv2's default).",
                                   flag="colbert_kmeans_iterations")

  def __post_init__(self):
    if self.nbits not in (0, *residual_codec.NBITS):
      raise InputError(f"--colbert_nbits={self.nbits} is not 0 (uncompressed) or one of "
                       f"{residual_codec.NBITS}", field="colbert_nbits")
    check_minimum("colbert_centroids", self.num_centroids, 0)
    check_minimum("colbert_kmeans_sample", self.kmeans_sample, 0)
    check_minimum("colbert_kmeans_iterations", self.kmeans_iterations, 1)
    compression_changed = any(getattr(self, field.name) != field.default
                              for field in dataclasses.fields(self) if field.name != "nbits")
    if not self.nbits and compression_changed:
      raise InputError("--colbert_centroids and --colbert_kmeans_* set the compression, which "
                       "--colbert_nbits=0 turns off", field="colbert_nbits")

  def check_fits(self, dim: int) -> None:
    """Refuses a compression that cannot pack `dim`-dimensional vectors in whole bytes."""
    if self.nbits:
      try:
        residual_codec.check_fits(dim, self.nbits)
      except ValueError as e:
        raise InputError(f"--colbert_nbits={self.nbits}: {e}", field="colbert_nbits") from e


class MultiVectorIndex(NamedTuple):
  """A loaded multi-vector version: its vectors, stored raw or compressed."""
  version: IndexVersion
  lengths: np.ndarray  # [num_blocks] int64 vectors per block
  vectors: np.ndarray | None  # [total, dim] float16, uncompressed
  codec: ResidualCodec | None  # with `compressed`, when compressed
  compressed: CompressedVectors | None

  def token_vectors(self) -> TokenVectors:
    """Every block's vectors as float32, decompressed when stored compressed."""
    if self.vectors is not None:
      return TokenVectors(np.asarray(self.vectors, np.float32), self.lengths)
    return TokenVectors(residual_codec.decompress(self.codec, self.compressed), self.lengths)


def _codec_sample(vectors: np.ndarray, size: int, seed: int) -> np.ndarray:
  """`size` of the vectors drawn without replacement (all of them when fewer)."""
  if size >= len(vectors):
    return vectors
  rng = np.random.default_rng(seed)
  return vectors[np.sort(rng.choice(len(vectors), size, replace=False))]


def publish(root: IndexRoot, corpus: TokenVectors, settings: MultiVectorStorage, *,
            normalized: bool, store_fingerprint: str, checkpoint_step: int | None,
            metadata: dict[str, Any], seed: int = 0) -> IndexVersion:
  """Writes `corpus` as a new multi-vector version of `root` (compressed unless nbits is 0)."""
  corpus.check()
  num_vectors, dim = corpus.vectors.shape

  def write(directory: epath.Path) -> dict[str, Any]:
    storage.save_array(directory / LENGTHS, corpus.lengths.astype(np.int64))
    if not settings.nbits:
      storage.save_array(directory / VECTORS, corpus.vectors.astype(np.float16))
      return dict(multi_vector=dict(nbits=0, num_vectors=num_vectors, bytes_per_vector=2 * dim))
    num_centroids = settings.num_centroids or residual_codec.default_num_centroids(num_vectors)
    sample = _codec_sample(corpus.vectors, settings.kmeans_sample or 64 * num_centroids, seed)
    codec = residual_codec.train_codec(sample, num_centroids=num_centroids, nbits=settings.nbits,
                                       normalized=normalized, seed=seed,
                                       max_iterations=settings.kmeans_iterations)
    compressed = residual_codec.compress(codec, corpus.vectors)
    for field, name in CODEC_FILES.items():
      storage.save_array(directory / name, getattr(codec, field))
    for field, name in COMPRESSED_FILES.items():
      storage.save_array(directory / name, getattr(compressed, field))
    return dict(multi_vector=dict(
        nbits=settings.nbits, num_centroids=len(codec.centroids), normalized=normalized,
        num_vectors=num_vectors, bytes_per_vector=compressed.bytes_per_vector,
        kmeans_sample=len(sample)))

  return root.publish_files(write, kind=storage.MULTI_VECTOR, num_rows=len(corpus.lengths),
                            embedding_size=dim,
                            storage_dtype=f"residual_{settings.nbits}bit" if settings.nbits
                            else "float16",
                            store_fingerprint=store_fingerprint, checkpoint_step=checkpoint_step,
                            metadata=metadata)


def load(version: IndexVersion) -> MultiVectorIndex:
  """The vectors of a multi-vector version (memory-mapped when local), checked against its
  manifest."""
  version.check_kind(storage.MULTI_VECTOR)
  directory = epath.Path(version.directory)
  lengths = np.asarray(storage.load_array(directory / LENGTHS), np.int64)
  if lengths.shape != (version.num_rows,):
    raise InputError(f"holds lengths of {lengths.shape[0]} blocks, the manifest says "
                     f"{version.num_rows}", path=str(directory / LENGTHS))
  total = int(lengths.sum())
  if not version.details["nbits"]:
    vectors = storage.load_array(directory / VECTORS)
    _check_rows(vectors, (total, version.embedding_size), directory / VECTORS)
    return MultiVectorIndex(version, lengths, vectors, None, None)
  codec_arrays = {field: np.asarray(storage.load_array(directory / name))
                  for field, name in CODEC_FILES.items()}
  nbits = version.details["nbits"]
  codec = ResidualCodec(nbits=nbits, normalized=version.details["normalized"], **codec_arrays)
  compressed = CompressedVectors(*(storage.load_array(directory / name)
                                   for name in COMPRESSED_FILES.values()))
  _check_rows(compressed.codes, (total,), directory / COMPRESSED_FILES["codes"])
  _check_rows(compressed.residuals, (total, version.embedding_size * nbits // 8),
              directory / COMPRESSED_FILES["residuals"])
  return MultiVectorIndex(version, lengths, None, codec, compressed)


def _check_rows(array: np.ndarray, shape: tuple[int, ...], path: epath.Path) -> None:
  if array.shape != shape:
    raise InputError(f"holds an array of shape {array.shape}, the manifest and lengths say "
                     f"{shape}", path=str(path))

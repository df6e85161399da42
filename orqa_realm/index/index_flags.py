"""Flags of the embedding, index building and index loading shared by embed, refresh, train and
evaluate, and of the BM25 index."""

from __future__ import annotations

import jax.numpy as jnp
from absl import flags

from orqa_realm.index.bm25 import BM25Settings
from orqa_realm.index.scann_index import ScannConfig
from orqa_realm.index.storage import STORAGE_DTYPES

INDEX_DIR = flags.DEFINE_string(
    "index_dir", None, "Index root directory: versions published by `python -m orqa_realm.embed` "
    "or the refresher, the newest named by its LATEST file.")
INDEX_BACKEND = flags.DEFINE_enum(
    "index_backend", "exact", ["exact", "scann"],
    "Searcher: exact top-k on the devices, or ScaNN (published versions then include a ScaNN "
    "index).")
INDEX_STORAGE_DTYPE = flags.DEFINE_enum(
    "index_storage_dtype", "float32", list(STORAGE_DTYPES),
    "How embeddings are stored on disk (int8: one float32 scale per row).")
INDEX_KEEP_VERSIONS = flags.DEFINE_integer("index_keep_versions", 3, "Index versions kept on disk.")
EMBED_BATCH_SIZE = flags.DEFINE_integer(
    "embed_batch_size", 128, "Blocks per embedding batch (over all devices).")
EMBED_DTYPE = flags.DEFINE_enum(
    "embed_dtype", "bfloat16", ["bfloat16", "float32"],
    "Matmul dtype when embedding (float32 accumulation). float32 is faster on CPUs without bf16 "
    "instructions (AVX2-only machines).")

_SCANN_NUM_LEAVES = flags.DEFINE_integer(
    "scann_num_leaves", 0, "ScaNN tree partitions; 0: ~sqrt(corpus size), no tree below 16384 "
    "rows.")
_SCANN_LEAVES_TO_SEARCH = flags.DEFINE_integer(
    "scann_num_leaves_to_search", 0, "Partitions searched per query; 0: a tenth of the leaves.")
_SCANN_TRAINING_SAMPLE = flags.DEFINE_integer(
    "scann_training_sample_size", 0, "Rows the tree and quantiser train on; 0: min(N, max(100k, 100 x leaves)).")
_SCANN_DIMS_PER_BLOCK = flags.DEFINE_integer(
    "scann_dimensions_per_block", 2, "Asymmetric hashing sub-space size.")
_SCANN_THRESHOLD = flags.DEFINE_float(
    "scann_anisotropic_threshold", 0.2, "Anisotropic quantisation threshold (eta).")
_SCANN_REORDER = flags.DEFINE_integer(
    "scann_reorder", 0, "Candidates re-scored exactly; 0: max(100, 10 x scann_num_neighbors).")
_SCANN_NUM_NEIGHBORS = flags.DEFINE_integer(
    "scann_num_neighbors", 10, "The k the ScaNN index is tuned for (searches may ask for more).")

BM25_DIR = flags.DEFINE_string(
    "bm25_dir", None, "Where the BM25 index of --block_store is kept: loaded when there, built and "
    "saved there otherwise. Without it, the index is built in memory for the run.")
_BM25_K1 = flags.DEFINE_float("bm25_k1", BM25Settings.k1, "BM25 term frequency saturation.")
_BM25_B = flags.DEFINE_float("bm25_b", BM25Settings.b, "BM25 length normalisation.")
_BM25_STEMMER = flags.DEFINE_string(
    "bm25_stemmer", BM25Settings.stemmer, "PyStemmer (Snowball) algorithm for BM25 words; '' for "
    "none.")
_BM25_STOPWORDS = flags.DEFINE_string(
    "bm25_stopwords", BM25Settings.stopwords, "bm25s stop word list (e.g. en); '' for none.")


def bm25_settings() -> BM25Settings:
  return BM25Settings(k1=_BM25_K1.value, b=_BM25_B.value, stemmer=_BM25_STEMMER.value,
                      stopwords=_BM25_STOPWORDS.value)


def scann_config() -> ScannConfig | None:
  """The ScaNN configuration to build with, or None when the backend is exact."""
  if INDEX_BACKEND.value != "scann":
    return None
  return ScannConfig(
      num_leaves=_SCANN_NUM_LEAVES.value, num_leaves_to_search=_SCANN_LEAVES_TO_SEARCH.value,
      training_sample_size=_SCANN_TRAINING_SAMPLE.value,
      dimensions_per_block=_SCANN_DIMS_PER_BLOCK.value,
      anisotropic_quantization_threshold=_SCANN_THRESHOLD.value,
      reorder_num_neighbors=_SCANN_REORDER.value, num_neighbors=_SCANN_NUM_NEIGHBORS.value)


def embed_dtype():
  return jnp.dtype(EMBED_DTYPE.value)

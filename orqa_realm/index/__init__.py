"""Retrieval over a block store: maximum inner product search of block embeddings (exact on the
devices, ScaNN), BM25, their fusion, and the versioned on-disk indexes that the refresher
publishes and trainers and evaluation load."""

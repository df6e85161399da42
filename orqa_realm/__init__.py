"""Learned retrievers and readers for open-domain question answering in JAX/Flax."""

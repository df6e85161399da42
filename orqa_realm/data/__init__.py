"""Data: tokenization, documents, block store, QA datasets."""

"""Models: the Flax BERT, its checkpoint import, the retriever, reader and MLM heads."""

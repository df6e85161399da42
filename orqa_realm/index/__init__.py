"""Maximum inner product search over block embeddings: exact on the devices, ScaNN, and the
versioned on-disk indexes that the refresher publishes and trainers and evaluation load."""

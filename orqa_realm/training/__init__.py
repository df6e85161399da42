"""The training loop every task plugs into: optimizer, checkpoints, evaluation and metrics."""

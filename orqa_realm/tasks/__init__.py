"""Training objectives, one module each (its settings dataclass, batches, loss and evaluation);
each plugs into the one loop in `orqa_realm.training.loop`."""

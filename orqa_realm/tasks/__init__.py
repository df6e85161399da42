"""Training objectives; each plugs into the one loop in `orqa_realm.train`."""

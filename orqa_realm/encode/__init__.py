"""Encoding: embedding a block store or queries with a run's parameters, opening a run from its
saved settings, reading answers with a trained reader, evaluation, and the index refresher."""

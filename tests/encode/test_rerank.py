"""Scoring pairs with a trained cross-encoder: sorted, batched and padded scoring equals the
model on each pair alone; a run of the other kind is refused where a cross-encoder (or a dual
encoder) is expected, naming both."""

import jax
import numpy as np
import pytest

from orqa_realm.core import parallel
from orqa_realm.core.errors import InputError
from orqa_realm.data.pair_inputs import pair_inputs
from orqa_realm.data.tokenization import Tokenizer
from orqa_realm.encode import runs
from orqa_realm.encode.rerank import CrossEncoderReranker, RerankSettings, score_pairs
from orqa_realm.modeling.cross_encoder import CrossEncoder

MESH = parallel.make_mesh()


def test_batched_scores_equal_each_pair_alone(squad_block_store, tiny_bert_dir,
                                              tiny_cross_encoder_run):
  run = runs.restore_cross_encoder_run(tiny_cross_encoder_run, None, MESH)
  assert run.step == 2
  tokenizer = Tokenizer(tiny_bert_dir)
  queries = tokenizer.tokenize(["Who founded the university?", "When did the war end?",
                                "What is the capital?"])
  block_ids = np.array([[0, 500, 1637, 12, 7], [3, 3, 900, 41, 1000], [8, 77, 1500, 2, 640]])
  # 15 pairs in batches of 4 (the last topped up), sorted by length: padded to several lengths.
  scores = score_pairs(run.params, run.config, squad_block_store, queries, block_ids,
                       batch_size=4, mesh=MESH)
  model = CrossEncoder(run.config)
  for q, row in enumerate(block_ids):
    for c, block in enumerate(row):
      alone = pair_inputs(squad_block_store, [queries[q]], np.array([[block]]),
                          max_length=run.config.max_length,
                          query_length=run.config.query_length)
      expected = model.apply({"params": jax.device_get(run.params)}, alone)[0, 0]
      np.testing.assert_allclose(scores[q, c], expected, rtol=1e-4, atol=1e-5)
  assert scores[1, 0] == scores[1, 1]  # the same pair twice

  reranker = CrossEncoderReranker(run, squad_block_store, tokenizer,
                                  RerankSettings(batch_size=4), MESH)
  np.testing.assert_allclose(
      reranker(["Who founded the university?"], block_ids[:1]), scores[:1], rtol=1e-5)
  assert reranker.cost()["pairs"] == 5 and reranker.cost()["pairs_per_second"] > 0


def test_each_kind_of_run_is_refused_where_the_other_is_expected(tiny_ict_run,
                                                                 tiny_cross_encoder_run):
  with pytest.raises(InputError, match=r"task 'ict'\) is a dual-encoder retriever, where a "
                     r"cross-encoder run \(--task=cross_encoder\) is expected"):
    runs.restore_cross_encoder_run(tiny_ict_run, None, MESH)
  with pytest.raises(InputError, match=r"task 'cross_encoder'\) is a cross-encoder, .* where "
                     r"a dual-encoder retriever run"):
    runs.open_retriever_run(tiny_cross_encoder_run)

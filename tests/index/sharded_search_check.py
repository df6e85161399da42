"""Run in a subprocess with 4 simulated CPU devices: exact search, dense and multi-vector
(MaxSim), sharded over 4 devices == on 1.

Prints one JSON line; the test asserts on it.
"""

import functools
import json

import jax
import numpy as np

from orqa_realm.core import parallel
from orqa_realm.index.exact import ExactSearcher
from orqa_realm.index.multi_vector_search import ExactMultiVectorSearcher
from orqa_realm.modeling import multi_vector
from orqa_realm.modeling.bert import BertConfig
from tests.index.test_multi_vector_search import random_corpus, random_queries


def multi_vector_report(rng) -> dict:
  """MaxSim over 4 shards == over 1: 301 blocks of 0-12 vectors, chunks of 16."""
  corpus = random_corpus(rng, 301, 8, 12)
  queries = random_queries(rng, 9, 5, 8)
  score = functools.partial(multi_vector.scores, multi_vector.ColBERTConfig(BertConfig()))
  one = ExactMultiVectorSearcher(corpus, score, mesh=parallel.make_mesh(jax.devices()[:1]),
                            chunk_size=16)
  four = ExactMultiVectorSearcher(corpus, score, mesh=parallel.make_mesh(), chunk_size=16)
  result_one, result_four = one.search_sets(queries, 100), four.search_sets(queries, 100)
  return dict(maxsim_same_ids=bool((result_one.ids == result_four.ids).all()),
              maxsim_max_score_difference=float(np.abs(result_one.scores
                                                       - result_four.scores).max()),
              maxsim_shards=four.mesh.size)


def main():
  assert jax.device_count() == 4, jax.devices()
  rng = np.random.default_rng(0)
  # 1003 rows: neither the shards nor the chunks divide it, so padding rows are exercised.
  embeddings = rng.normal(size=(1003, 32)).astype(np.float32)
  queries = rng.normal(size=(37, 32)).astype(np.float32)
  one = ExactSearcher(embeddings, mesh=parallel.make_mesh(jax.devices()[:1]), chunk_size=64)
  four = ExactSearcher(embeddings, mesh=parallel.make_mesh(), chunk_size=64)
  result_one, result_four = one.search(queries, 20), four.search(queries, 20)
  # More results than a shard holds (each has 251 rows): ORQA's top c over a small corpus.
  whole_one, whole_four = one.search(queries, 1000), four.search(queries, 1000)
  rows = np.asarray(four.rows_on_device(whole_four.ids[:5, :300]))
  print(json.dumps(dict(
      same_ids=bool((result_one.ids == result_four.ids).all()),
      max_score_difference=float(np.abs(result_one.scores - result_four.scores).max()),
      same_ids_beyond_a_shard=bool((whole_one.ids == whole_four.ids).all()),
      rows_match=bool((rows == embeddings[whole_four.ids[:5, :300]]).all()),
      shards=four.mesh.size, rows_per_device=four._corpus.shape[0] // 4,
      **multi_vector_report(rng))))


if __name__ == "__main__":
  main()

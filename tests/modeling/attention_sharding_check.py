"""Run by test_bert.py with 4 simulated CPU devices: the BERT forward with its batch split over
the devices, per-sequence attention; prints a JSON report (collectives in the compiled program,
difference from the unsplit batched forward)."""

import json
import re

import jax
import numpy as np

from orqa_realm.core import parallel
from orqa_realm.modeling import bert
from tests.modeling.test_bert import TINY


def main():
  bert._LOGITS_BYTES_PER_STEP = 1  # one sequence of each device's share per step: two steps
  mesh = parallel.make_mesh()
  token_ids = np.random.default_rng(0).integers(0, TINY.vocab_size, (8, 12)).astype(np.int32)
  input_mask = (np.arange(12)[None, :] < np.arange(5, 13)[:, None]).astype(np.int32)
  batch = (token_ids, np.zeros_like(token_ids), input_mask)
  params = jax.tree.map(np.asarray, bert.initial_params(
      bert.BertModel(TINY), jax.random.key(0), *batch))
  params = bert.nn.unbox(params)

  def forward(attention):
    model = bert.BertModel(TINY, attention=attention)
    return jax.jit(lambda p, *b: model.apply({"params": p}, *b).sequence_output)

  split = [jax.device_put(array, parallel.batch_sharding(mesh)) for array in batch]
  per_sequence = forward("per_sequence")
  compiled = per_sequence.lower(params, *split).compile().as_text()
  collectives = sorted(set(re.findall(
      r"\b(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)\b", compiled)))
  difference = np.abs(np.asarray(per_sequence(params, *split))
                      - np.asarray(forward("batched")(params, *batch))).max()
  print(json.dumps({"devices": jax.device_count(), "collectives": collectives,
                    "max_difference": float(difference)}))


if __name__ == "__main__":
  main()

"""Run in a subprocess with 4 simulated CPU devices: the REALM loss, metrics and gradients of
one batch on a 4-device mesh == on 1 device.

Prints one JSON line with what it found; the test asserts on it.
"""

import json
import sys
import tempfile

import jax
import numpy as np

from orqa_realm.core import parallel
from orqa_realm.index.handle import open_index
from orqa_realm.index.storage import IndexRoot
from orqa_realm.tasks.base import StepContext
from tests.tasks.sharding import one_device_against_all
from tests.tasks.tiny_realm import tiny_realm_task


def main(block_store, bert_dir):
  assert jax.device_count() == 4, jax.devices()
  task = tiny_realm_task(block_store, bert_dir, batch_size=8)
  params = task.init_params(jax.random.key(0))
  with tempfile.TemporaryDirectory() as directory:
    root = IndexRoot(directory)
    embeddings = np.random.default_rng(0).normal(size=(len(task.store), 16)).astype(np.float32)
    root.publish(embeddings, store_fingerprint=task.store.fingerprint, checkpoint_step=0)
    batch = task.train_batch(0, StepContext(parallel.make_mesh(), params=params,
                                            index=open_index(root.latest(), task.store)))
  found = one_device_against_all(task, params, batch)
  print(json.dumps(dict(
      loss_one=found["loss_one"], loss_four=found["loss_four"], grad_scale=found["grad_scale"],
      grad_difference=found["grad_difference"],
      utility_one=float(found["metrics_one"]["retrieval_utility"]),
      utility_four=float(found["metrics_four"]["retrieval_utility"]))))


if __name__ == "__main__":
  main(*sys.argv[1:])

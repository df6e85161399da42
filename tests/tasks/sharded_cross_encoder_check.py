"""Run in a subprocess with 4 simulated CPU devices: the cross-encoder loss and gradients of one
batch on a 4-device mesh == on 1 device.

Prints one JSON line with the largest differences found; the test asserts on them.
"""

import json
import sys

import jax

from orqa_realm.core import parallel
from orqa_realm.tasks.base import StepContext
from tests.tasks.sharding import one_device_against_all
from tests.tasks.tiny_cross_encoder import tiny_cross_encoder_task


def main(block_store, bert_dir):
  assert jax.device_count() == 4, jax.devices()
  task = tiny_cross_encoder_task(block_store, bert_dir, batch_size=8)
  batch = task.train_batch(0, StepContext(parallel.make_mesh()))
  found = one_device_against_all(task, task.init_params(jax.random.key(0)), batch)
  print(json.dumps(dict(loss_one=found["loss_one"], loss_four=found["loss_four"],
                        grad_scale=found["grad_scale"], grad_difference=found["grad_difference"],
                        accuracy_one=float(found["metrics_one"]["accuracy"]),
                        accuracy_four=float(found["metrics_four"]["accuracy"]))))


if __name__ == "__main__":
  main(*sys.argv[1:])

"""Run in a subprocess with 4 simulated CPU devices: the DPR loss and gradients of one batch on
a 4-device mesh == on 1 device.

Prints one JSON line with the largest differences found; the test asserts on them.
"""

import json
import sys

import jax
import numpy as np

from orqa_realm import parallel
from tests.tasks.sharding import loss_and_grads
from tests.tasks.tiny_dpr import tiny_dpr_task


def main(block_store, bert_dir):
  assert jax.device_count() == 4, jax.devices()
  one, four = parallel.make_mesh(jax.devices()[:1]), parallel.make_mesh()
  task = tiny_dpr_task(block_store, bert_dir, batch_size=8)
  params = task.init_params(jax.random.key(0))
  batch = task.train_batch(0)
  loss_one, metrics_one, grads_one = loss_and_grads(task, params, batch, one)
  loss_four, metrics_four, grads_four = loss_and_grads(task, params, batch, four)
  grad_scale = float(np.sqrt(sum(np.sum(g ** 2) for g in jax.tree.leaves(grads_one))))
  grad_difference = max(float(np.abs(a - b).max())
                        for a, b in zip(jax.tree.leaves(grads_one), jax.tree.leaves(grads_four)))
  print(json.dumps(dict(loss_one=loss_one, loss_four=loss_four, grad_scale=grad_scale,
                        grad_difference=grad_difference,
                        accuracy_one=float(metrics_one["accuracy"]),
                        accuracy_four=float(metrics_four["accuracy"]))))


if __name__ == "__main__":
  main(*sys.argv[1:])

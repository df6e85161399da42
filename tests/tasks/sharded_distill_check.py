"""Run in a subprocess with 4 simulated CPU devices: the distillation loss (listwise KL plus the
in-batch softmax) and its gradients of one batch on a 4-device mesh == on 1 device.

Prints one JSON line with the largest differences found; the test asserts on them.
"""

import json
import sys

import jax

from orqa_realm.core import parallel
from orqa_realm.tasks.base import StepContext
from tests.tasks.sharding import one_device_against_all
from tests.tasks.tiny_cross_encoder import tiny_distill_task


def main(block_store, bert_dir, teacher_workdir, qa_dataset):
  assert jax.device_count() == 4, jax.devices()
  task = tiny_distill_task(block_store, bert_dir, teacher_workdir, qa_dataset, batch_size=8,
                           loss="listwise_kl", in_batch_weight=0.5)
  batch = task.train_batch(0, StepContext(parallel.make_mesh()))
  found = one_device_against_all(task, task.init_params(jax.random.key(0)), batch)
  print(json.dumps(dict(loss_one=found["loss_one"], loss_four=found["loss_four"],
                        grad_scale=found["grad_scale"], grad_difference=found["grad_difference"])))


if __name__ == "__main__":
  main(*sys.argv[1:])

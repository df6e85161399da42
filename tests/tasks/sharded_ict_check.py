"""Run in a subprocess with 4 simulated CPU devices: ICT on a 4-device mesh == on 1 device.

Prints one JSON line with the largest differences found; the test asserts on them.
"""

import json
import sys

import jax
import numpy as np

from orqa_realm.core import parallel
from orqa_realm.tasks.base import StepContext
from orqa_realm.training.loop import TrainConfig, train
from tests.tasks.sharding import one_device_against_all
from tests.tasks.tiny_ict import tiny_ict_task


def main(block_store, bert_dir, workdir):
  assert jax.device_count() == 4, jax.devices()
  one, four = parallel.make_mesh(jax.devices()[:1]), parallel.make_mesh()
  task = tiny_ict_task(block_store, bert_dir, batch_size=8)
  params = task.init_params(jax.random.key(0))
  batch = task.train_batch(0, StepContext(four))
  found = one_device_against_all(task, params, batch)

  # Three whole optimizer steps through the training loop on each mesh.
  states = []
  for name, mesh in (("one", one), ("four", four)):
    config = TrainConfig(workdir=f"{workdir}/{name}", num_train_steps=3, batch_size=8,
                         learning_rate=1e-3, warmup_steps=1, log_every_steps=1,
                         checkpoint_every_steps=100, async_checkpoints=False)
    states.append(jax.device_get(train(task, config, mesh=mesh).params))
  param_difference = max(float(np.abs(a - b).max())
                         for a, b in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1])))
  print(json.dumps(dict(loss_one=found["loss_one"], loss_four=found["loss_four"],
                        grad_scale=found["grad_scale"], grad_difference=found["grad_difference"],
                        param_difference=param_difference)))


if __name__ == "__main__":
  main(*sys.argv[1:])

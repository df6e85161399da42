"""Run in a subprocess with 4 simulated CPU devices: for each task given, the loss, metrics and
gradients of one batch on a 4-device mesh == on 1 device.

Each argument is a JSON object {"name", "builder": "module:function", "args": [...], "kwargs":
{...}} that builds a tiny task with `builder(*args, **kwargs)`, and optionally "grad_accum_steps":
the 4-device side then accumulates the gradient over that many micro-batches (the 1-device side
takes the batch whole). A task that needs parameters to
compose its batch (ADORE retrieves its negatives) gets it from the initial parameters on all
devices, and one that needs the refreshed index (ART's candidates) a version of seeded random
embeddings; both meshes then score the same batch. Prints one JSON line, {name: what was found}; the
tests assert on it.
"""

import importlib
import json
import sys
import tempfile

import jax
import numpy as np

from orqa_realm.core import parallel
from orqa_realm.index.handle import open_index
from orqa_realm.index.storage import IndexRoot
from orqa_realm.tasks.base import Need, StepContext
from tests.tasks.sharding import one_device_against_all


def build_task(spec: dict):
  module, function = spec["builder"].split(":")
  return getattr(importlib.import_module(module), function)(*spec.get("args", ()),
                                                            **spec.get("kwargs", {}))


def random_index(store, directory: str):
  """A published index version of seeded random 16-dimensional embeddings of `store`."""
  root = IndexRoot(directory)
  embeddings = np.random.default_rng(0).normal(size=(len(store), 16)).astype(np.float32)
  root.publish(embeddings, store_fingerprint=store.fingerprint, checkpoint_step=0)
  return open_index(root.latest(), store)


def check(task, grad_accum_steps: int = 1) -> dict:
  mesh = parallel.make_mesh()
  params = task.init_params(jax.random.key(0))
  index = (random_index(task.store, tempfile.mkdtemp(prefix="sharded_index_"))
           if Need.INDEX in task.needs else None)
  context = StepContext(mesh, params=(jax.device_put(params, parallel.replicated(mesh))
                                      if Need.PARAMS in task.needs else None), index=index)
  found = one_device_against_all(task, params, task.train_batch(0, context), grad_accum_steps)
  metrics = {name: (float(found["metrics_one"][name]), float(found["metrics_four"][name]))
             for name in found["metrics_one"] if np.ndim(found["metrics_one"][name]) == 0}
  return dict(loss_one=found["loss_one"], loss_four=found["loss_four"],
              grad_scale=found["grad_scale"], grad_difference=found["grad_difference"],
              metrics=metrics)


def main(*specs: str):
  assert jax.device_count() == 4, jax.devices()
  print(json.dumps({spec["name"]: check(build_task(spec), spec.get("grad_accum_steps", 1))
                    for spec in map(json.loads, specs)}))


if __name__ == "__main__":
  main(*sys.argv[1:])

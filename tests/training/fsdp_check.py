"""Run in a subprocess with 4 simulated CPU devices: ICT trained on a data:2,fsdp:2 mesh gives
the losses and parameters of training on one device, with parameters and Adam moments split
over "fsdp"; and a run resumes from its checkpoint on a mesh of another shape.

Prints one JSON line with what it found; the test asserts on it.
"""

import json
import sys

import jax
import numpy as np
import optax

from orqa_realm.core import parallel
from orqa_realm.training.loop import TrainConfig, train
from tests.tasks.tiny_ict import tiny_ict_task


def losses(workdir: str) -> list[float]:
  with open(f"{workdir}/metrics.jsonl", encoding="utf-8") as f:
    return [record["loss"] for record in map(json.loads, f) if "loss" in record]


def largest_difference(first, second) -> float:
  return max(float(np.abs(a - b).max())
             for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)))


def fraction_on_one_device(tree) -> float:
  """Elements one device holds over the elements of `tree`: 1 replicated, 1/2 split in two."""
  held = sum(leaf.addressable_shards[0].data.size for leaf in jax.tree.leaves(tree))
  return held / sum(leaf.size for leaf in jax.tree.leaves(tree))


def main(block_store, bert_dir, workdir):
  assert jax.device_count() == 4, jax.devices()
  task = tiny_ict_task(block_store, bert_dir, batch_size=8, eval_batches=0)
  meshes = dict(one=parallel.make_mesh(jax.devices()[:1]),
                fsdp=parallel.make_mesh(shape="data:2,fsdp:2"))

  def run(name, steps, mesh):
    config = TrainConfig(workdir=f"{workdir}/{name}", num_train_steps=steps, batch_size=8,
                         learning_rate=1e-3, warmup_steps=1, log_every_steps=1,
                         checkpoint_every_steps=100, async_checkpoints=False)
    return train(task, config, mesh=mesh)

  states = {name: run(name, 3, mesh) for name, mesh in meshes.items()}
  fsdp = states["fsdp"]
  kernel = fsdp.params["query_encoder"]["bert"]["layers"]["attention"]["query"]["kernel"]
  found = dict(
      losses_one=losses(f"{workdir}/one"), losses_fsdp=losses(f"{workdir}/fsdp"),
      param_difference=largest_difference(jax.device_get(states["one"].params),
                                          jax.device_get(fsdp.params)),
      kernel_spec=[str(axis) for axis in kernel.sharding.spec],
      params_held=fraction_on_one_device(fsdp.params),
      adam_mu_held=fraction_on_one_device(optax.tree_utils.tree_get(fsdp.opt_state, "mu")),
      adam_nu_held=fraction_on_one_device(optax.tree_utils.tree_get(fsdp.opt_state, "nu")))

  # One more step each, the FSDP run resumed from its checkpoint on the 1-device mesh.
  resumed = {name: run(name, 4, meshes["one"]) for name in meshes}
  found.update(
      resumed_losses_one=losses(f"{workdir}/one"), resumed_losses_fsdp=losses(f"{workdir}/fsdp"),
      resumed_param_difference=largest_difference(jax.device_get(resumed["one"].params),
                                                  jax.device_get(resumed["fsdp"].params)))
  print(json.dumps(found))


if __name__ == "__main__":
  main(*sys.argv[1:])

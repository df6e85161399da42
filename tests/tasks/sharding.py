"""The jitted loss and gradients of a task's batch on a mesh, for the multi-device checks."""

import jax
import numpy as np

from orqa_realm.core import parallel
from orqa_realm.training import loop
from tests.conftest import run_json_module, subprocess_env


def loss_and_grads(task, params, batch, mesh, grad_accum_steps=1):
  """(loss, metrics, gradients) of `task.loss` (dropout on, a fixed key), as the training loop
  computes them (accumulated over `grad_accum_steps` micro-batches), jitted with the params
  replicated and the batch sharded over `mesh`; all on the host."""
  rng = jax.random.key(3)
  step = jax.jit(
      lambda p, b: loop.batch_gradients(task, p, b, rng, grad_accum_steps, mesh),
      in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)),
      out_shardings=parallel.replicated(mesh))
  loss, metrics, grads = step(jax.device_put(params, parallel.replicated(mesh)),
                              parallel.to_global(batch, mesh))
  return float(loss), jax.device_get(metrics), jax.device_get(grads)


def one_device_against_all(task, params, batch, grad_accum_steps=1):
  """The loss, metrics and gradients of `batch` on a 1-device mesh and on all devices, there
  accumulated over `grad_accum_steps` micro-batches: {loss_one, loss_four, metrics_one,
  metrics_four, grad_scale (the 1-device gradient norm), grad_difference (the largest
  elementwise difference)}."""
  one, four = parallel.make_mesh(jax.devices()[:1]), parallel.make_mesh()
  loss_one, metrics_one, grads_one = loss_and_grads(task, params, batch, one)
  loss_four, metrics_four, grads_four = loss_and_grads(task, params, batch, four,
                                                       grad_accum_steps)
  grad_scale = float(np.sqrt(sum(np.sum(g ** 2) for g in jax.tree.leaves(grads_one))))
  grad_difference = max(float(np.abs(a - b).max())
                        for a, b in zip(jax.tree.leaves(grads_one), jax.tree.leaves(grads_four)))
  return dict(loss_one=loss_one, loss_four=loss_four, metrics_one=metrics_one,
              metrics_four=metrics_four, grad_scale=grad_scale, grad_difference=grad_difference)


def run_on_four_devices(module: str, *args: str, timeout: float = 600) -> dict:
  """`run_json_module` with 4 simulated CPU devices."""
  return run_json_module(
      module, *args, timeout=timeout,
      env=subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"))

"""The jitted loss and gradients of a task's batch on a mesh, for the multi-device checks."""

import jax

from orqa_realm import parallel


def loss_and_grads(task, params, batch, mesh):
  """(loss, metrics, gradients) of `task.loss` (dropout on, a fixed key), jitted with the params
  replicated and the batch sharded over `mesh`; all on the host."""
  rng = jax.random.key(3)
  step = jax.jit(
      lambda p, b: jax.value_and_grad(task.loss, has_aux=True)(p, b, rng, False),
      in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)),
      out_shardings=parallel.replicated(mesh))
  (loss, metrics), grads = step(jax.device_put(params, parallel.replicated(mesh)),
                                parallel.to_global(batch, mesh))
  return float(loss), jax.device_get(metrics), jax.device_get(grads)

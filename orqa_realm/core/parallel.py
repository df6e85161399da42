"""Data parallelism: one ("data",) mesh over all devices, batches sharded, parameters replicated.

Losses are written over the global batch and jitted with these shardings; XLA inserts the
collectives (gradient all-reduce, the all-gather of embeddings for in-batch negatives).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_multihost(coordinator_address: str | None = None,
                         num_processes: int | None = None, process_id: int | None = None) -> None:
  """Joins the other processes of the run: on a TPU pod or GPU cluster with the coordinator read
  from the environment (no arguments); on CPU hosts with an explicit coordinator, whose
  collectives then go through gloo."""
  if coordinator_address is not None:
    # Only CPU collectives read this; accelerators keep their own (NCCL, ICI).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named "data" over `devices` (default: every device of every host)."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the mesh."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
  if global_batch_size % mesh.size:
    raise ValueError(f"the global batch size {global_batch_size} must be a multiple of the "
                     f"{mesh.size} devices of the mesh")


def host_local_rows(global_batch_size: int) -> slice:
  """The rows of the global batch this host feeds (all of them on a single host): one
  contiguous block per host, in process order, as `make_array_from_process_local_data` lays
  them out over a mesh of all devices."""
  if global_batch_size % jax.process_count():
    raise ValueError(f"the global batch size {global_batch_size} must be a multiple of the "
                     f"{jax.process_count()} hosts")
  per_host = global_batch_size // jax.process_count()
  return slice(jax.process_index() * per_host, (jax.process_index() + 1) * per_host)


def fetch_replicated(array: jax.Array) -> np.ndarray:
  """A replicated global array's value on the host; this host's copy, so it works on every host
  of a multi-host mesh (where `jax.device_get` refuses arrays it cannot address whole)."""
  return np.asarray(array.addressable_data(0))


def global_from_local(batch: Any, mesh: Mesh) -> Any:
  """Turns this host's rows of a batch (numpy leaves, `host_local_rows` of the global batch)
  into global jax Arrays sharded over the batch axis; jax Arrays (already global, e.g. computed
  on the devices) are resharded so."""
  sharding = batch_sharding(mesh)

  def to_global_array(array):
    if isinstance(array, jax.Array):
      return jax.device_put(array, sharding)
    return jax.make_array_from_process_local_data(sharding, np.asarray(array))

  return jax.tree.map(to_global_array, batch)


def to_global(batch: Any, mesh: Mesh) -> Any:
  """Turns a batch that every host holds whole (a pytree of [global_batch, ...] numpy arrays,
  e.g. the blocks being embedded) into global jax Arrays sharded over the batch axis, each host
  contributing its own rows; jax Arrays are resharded."""
  rows = host_local_rows(jax.tree.leaves(batch)[0].shape[0])
  return global_from_local(
      jax.tree.map(lambda array: array if isinstance(array, jax.Array) else np.asarray(array)[rows],
                   batch), mesh)

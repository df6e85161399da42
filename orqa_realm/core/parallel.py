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


def initialize_multihost() -> None:
  """Joins the other hosts of a pod or GPU cluster (reads the coordinator from the environment)."""
  jax.distributed.initialize()


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
  """The rows of the global batch this host feeds (all of them on a single host)."""
  per_host = global_batch_size // jax.process_count()
  return slice(jax.process_index() * per_host, (jax.process_index() + 1) * per_host)


def fetch_replicated(array: jax.Array) -> np.ndarray:
  """A replicated global array's value on the host; this host's copy, so it works on every host
  of a multi-host mesh (where `jax.device_get` refuses arrays it cannot address whole)."""
  return np.asarray(array.addressable_data(0))


def to_global(batch: Any, mesh: Mesh) -> Any:
  """Turns a host's numpy batch (a pytree of [global_batch, ...] arrays) into global jax Arrays
  sharded over the batch axis; jax Arrays (already global, e.g. computed on the devices) are
  resharded so.

  Every host computes the same global batch (it is a function of seed and step) and contributes
  its own rows, so no host ever needs another host's data.
  """
  sharding = batch_sharding(mesh)
  leaves = jax.tree.leaves(batch)
  rows = host_local_rows(leaves[0].shape[0])

  def to_global_array(array):
    if isinstance(array, jax.Array):
      return jax.device_put(array, sharding)
    return jax.make_array_from_process_local_data(sharding, np.asarray(array)[rows])

  return jax.tree.map(to_global_array, batch)

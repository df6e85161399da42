"""The device mesh: a ("data", "fsdp") grid over all devices.

Batches are split over both axes, so every device holds its own rows. Parameters and optimizer
state may be split over "fsdp" (fully sharded data parallelism: each device keeps a slice of
each matrix and XLA all-gathers a layer's weights where it is used, reduce-scattering its
gradients); with fsdp of size 1 (the default) they are replicated and this is plain data
parallelism. Losses are written over the global batch and jitted with these shardings; XLA
inserts the collectives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
MESH_AXES = (DATA_AXIS, FSDP_AXIS)
# The batch is split over every device: over both axes of the mesh.
BATCH_AXES = MESH_AXES


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


def parse_mesh_shape(text: str, device_count: int) -> dict[str, int]:
  """The axis sizes `text` names, e.g. "data:2,fsdp:2" or "fsdp:4" (an axis left out, or given
  as -1, takes the devices the others leave); "" is all devices on "data"."""
  sizes: dict[str, int] = {}
  for item in filter(None, (part.strip() for part in text.split(","))):
    name, _, size = item.partition(":")
    if name not in MESH_AXES or name in sizes:
      raise ValueError(f"mesh shape {text!r}: {name!r} is not one of the axes {MESH_AXES} (each "
                       "named once)")
    try:
      sizes[name] = int(size)
    except ValueError:
      raise ValueError(f"mesh shape {text!r}: the size of {name!r} is not an integer") from None
    if sizes[name] == 0 or sizes[name] < -1:
      raise ValueError(f"mesh shape {text!r}: the size of {name!r} must be positive (or -1)")
  if not sizes:
    sizes = {FSDP_AXIS: 1}
  unknown = [name for name in MESH_AXES if sizes.get(name, -1) == -1]
  known = int(np.prod([sizes[name] for name in MESH_AXES if name not in unknown]))
  if len(unknown) > 1 or device_count % known:
    example = f" (e.g. data:{device_count // 2},fsdp:2)" if device_count % 2 == 0 else ""
    raise ValueError(f"mesh shape {text!r} does not divide the {device_count} devices{example}")
  for name in unknown:
    sizes[name] = device_count // known
  if int(np.prod(list(sizes.values()))) != device_count:
    raise ValueError(f"mesh shape {text!r} has {int(np.prod(list(sizes.values())))} devices, "
                     f"not the {device_count} there are")
  return {name: sizes[name] for name in MESH_AXES}


def make_mesh(devices: Sequence[jax.Device] | None = None, shape: str = "") -> Mesh:
  """The ("data", "fsdp") mesh over `devices` (default: every device of every host), shaped as
  `shape` says (`parse_mesh_shape`; default: all on "data"). Devices keep their order, so that
  each host's devices are consecutive rows of the batch."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  sizes = parse_mesh_shape(shape, devices.size)
  return Mesh(devices.reshape([sizes[name] for name in MESH_AXES]), MESH_AXES)


def data_mesh(mesh: Mesh) -> Mesh:
  """The same devices all on "data" (what sharded search splits its corpus over)."""
  return make_mesh(mesh.devices.flat)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over every device of the mesh."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


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
  """Turns a batch that every host holds whole (a pytree of [rows, ...] numpy arrays, e.g. the
  blocks being embedded) into global jax Arrays sharded over the batch axis, each host
  contributing its own share of each array's rows (arrays may differ in rows: a query's blocks
  follow it, so [queries] and [queries x blocks per query] split alike); jax Arrays are
  resharded."""
  return global_from_local(
      jax.tree.map(lambda array: array if isinstance(array, jax.Array)
                   else np.asarray(array)[host_local_rows(np.shape(array)[0])], batch), mesh)

"""Logical axes of parameters, and how they map onto the ("data", "fsdp") mesh.

Modules name the axes of each parameter they create (`logical(init, *axes)`, Flax's
`nn.with_logical_partitioning`), so `Module.init` returns boxed parameters: `nn.Partitioned`
leaves that carry the names. `param_shardings` turns those names into shardings by `RULES`, and
`unbox` gives the plain arrays that training, checkpoints and `Module.apply` use. Naming axes
rather than mesh dimensions keeps the models free of any one parallelism: another strategy
(tensor parallelism over "heads" and "mlp") is another set of rules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from orqa_realm.core.parallel import FSDP_AXIS

EMBED = "embed"  # the model's hidden size
MLP = "mlp"  # a dense layer's other feature axis: intermediate, pooler, projection, heads
HEADS = "heads"  # attention heads x head size: the outputs of query, key and value
VOCAB = "vocab"  # the rows of an embedding table, the logits over the vocabulary
LAYERS = "layers"  # the stacked layers of a scanned BERT

# Fully sharded data parallelism: each matrix split over "fsdp" along its hidden axis (or, when
# that does not divide, its other feature axis), each vector along its axis. Rules are tried in
# order and a mesh axis is used at most once per array (`mesh_axes`).
RULES: tuple[tuple[str, str | None], ...] = (
    (EMBED, FSDP_AXIS), (MLP, FSDP_AXIS), (HEADS, FSDP_AXIS), (VOCAB, None), (LAYERS, None))


def logical(init: Callable[..., jax.Array], *axes: str | None) -> Callable[..., nn.Partitioned]:
  """`init` whose parameters are boxed with the logical names of their axes (None: an axis
  never split)."""
  return nn.with_logical_partitioning(init, axes)


def _is_box(leaf: Any) -> bool:
  return isinstance(leaf, nn.Partitioned)


def unbox(params: Any) -> Any:
  """The arrays (or shapes) of boxed parameters; plain parameters are returned as they are."""
  return nn.unbox(params)


def with_values(boxed: Any, values: Any) -> Any:
  """`boxed` (parameters with their logical axes) holding the arrays of `values` (plain
  parameters of the same structure, e.g. pretrained weights) instead of its own."""
  flat_values = jax.tree.leaves(values)
  boxes, structure = jax.tree.flatten(boxed, is_leaf=_is_box)
  if len(flat_values) != len(boxes):
    raise ValueError(f"{len(flat_values)} arrays for {len(boxes)} parameters")
  return jax.tree.unflatten(structure, [box.replace_boxed(value) if _is_box(box) else value
                                        for box, value in zip(boxes, flat_values)])


def mesh_axes(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
  """The partition of an array of `shape` whose axes have logical `names`, on `mesh` by
  `RULES`: each rule in turn gives its mesh axis to its logical axis if the array has it, the
  mesh axis is still free and its size divides that dimension. A dimension nothing divides
  stays whole, so small heads need no special names."""
  assigned: list[str | None] = [None] * len(names)
  for logical_name, mesh_axis in RULES:
    if mesh_axis is None or logical_name not in names or mesh_axis in assigned:
      continue
    position = list(names).index(logical_name)
    if assigned[position] is None and shape[position] % mesh.shape[mesh_axis] == 0:
      assigned[position] = mesh_axis
  return PartitionSpec(*assigned)


def param_shardings(boxed: Any, mesh: Mesh) -> Any:
  """The shardings of `unbox(boxed)` on `mesh`: split by their logical axes (parameters
  without names are replicated). `boxed` may hold arrays or `jax.eval_shape` structs."""

  def sharding(leaf):
    if _is_box(leaf):
      return NamedSharding(mesh, mesh_axes(leaf.names, leaf.value.shape, mesh))
    return NamedSharding(mesh, PartitionSpec())

  return jax.tree.map(sharding, boxed, is_leaf=_is_box)

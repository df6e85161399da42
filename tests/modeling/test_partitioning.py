"""Logical axes to mesh partitions, and pretrained arrays in boxed parameters."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh, PartitionSpec

from orqa_realm.modeling import partitioning

MESH = AbstractMesh((2, 4), ("data", "fsdp"))


@pytest.mark.parametrize("names, shape, expected", [
    (("embed", "mlp"), (32, 64), PartitionSpec("fsdp", None)),  # one mesh axis per array
    (("mlp", "embed"), (64, 32), PartitionSpec(None, "fsdp")),  # embed first, wherever it is
    (("layers", "embed", "heads"), (3, 32, 32), PartitionSpec(None, "fsdp", None)),
    (("vocab", "embed"), (30522, 32), PartitionSpec(None, "fsdp")),
    (("heads",), (32,), PartitionSpec("fsdp")),
    (("embed", "mlp"), (6, 64), PartitionSpec(None, "fsdp")),  # 4 does not divide 6: next axis
    (("mlp", None), (6, 1), PartitionSpec(None, None)),  # nothing divides: replicated
])
def test_mesh_axes(names, shape, expected):
  assert partitioning.mesh_axes(names, shape, MESH) == expected


def test_with_values_keeps_the_axes():
  init = partitioning.logical(nn.initializers.zeros_init(), "embed", "mlp")
  boxed = {"dense": {"kernel": init(jax.random.key(0), (2, 3)), "count": jnp.zeros(())}}
  values = {"dense": {"kernel": np.ones((2, 3), np.float32), "count": np.float32(5)}}
  filled = partitioning.with_values(boxed, values)
  assert filled["dense"]["kernel"].names == ("embed", "mlp")
  np.testing.assert_array_equal(partitioning.unbox(filled)["dense"]["kernel"], np.ones((2, 3)))
  assert float(partitioning.unbox(filled)["dense"]["count"]) == 5
  with pytest.raises(ValueError, match="1 arrays for 2 parameters"):
    partitioning.with_values(boxed, {"dense": {"kernel": np.ones((2, 3))}})

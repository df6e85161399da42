"""The mesh's shape from --mesh_shape."""

import pytest

from orqa_realm.core import parallel


@pytest.mark.parametrize("text, sizes", [
    ("", dict(data=8, fsdp=1)),
    ("data:2,fsdp:4", dict(data=2, fsdp=4)),
    ("fsdp:4", dict(data=2, fsdp=4)),
    ("data:-1,fsdp:2", dict(data=4, fsdp=2)),
    ("data:8", dict(data=8, fsdp=1)),
    (" fsdp:8 , data:1 ", dict(data=1, fsdp=8)),
])
def test_mesh_shapes(text, sizes):
  assert parallel.parse_mesh_shape(text, 8) == sizes


@pytest.mark.parametrize("text, message", [
    ("model:2", "'model' is not one of the axes"),
    ("data:2,data:4", "'data' is not one of the axes"),
    ("fsdp:x", "the size of 'fsdp' is not an integer"),
    ("fsdp:0", "must be positive"),
    ("fsdp:3", "does not divide the 8 devices"),
    ("data:2,fsdp:2", "has 4 devices, not the 8"),
    ("data:-1,fsdp:-1", "does not divide"),
])
def test_bad_mesh_shapes_are_refused(text, message):
  with pytest.raises(ValueError, match=message):
    parallel.parse_mesh_shape(text, 8)


def test_make_mesh_names_both_axes():
  mesh = parallel.make_mesh()
  assert mesh.axis_names == parallel.MESH_AXES
  assert parallel.data_mesh(mesh).shape == dict(data=mesh.size, fsdp=1)

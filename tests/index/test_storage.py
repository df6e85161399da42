"""Index versions on disk: round trips, the pointer, keep-N, partial writes and refusals."""

import json
import os

import numpy as np
import pytest

from orqa_realm.core.errors import InputError
from orqa_realm.index import storage
from orqa_realm.index.handle import open_index
from orqa_realm.index.scann_index import ScannConfig


def random_embeddings(rows=64, dim=16, seed=0):
  return np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)


def test_float32_round_trip_is_exact_and_versions_count_up(tmp_path):
  root = storage.IndexRoot(str(tmp_path))
  assert root.latest() is None
  embeddings = random_embeddings()
  first = root.publish(embeddings, store_fingerprint="abc", checkpoint_step=10,
                       metadata={"note": "x"})
  second = root.publish(embeddings * 2, store_fingerprint="abc", checkpoint_step=20)
  assert (first.version, second.version) == (1, 2)
  latest = root.latest()
  assert latest.version == 2 and latest.checkpoint_step == 20
  np.testing.assert_array_equal(storage.load_embeddings(latest), embeddings * 2)
  assert root.read(1).metadata == {"note": "x"}


@pytest.mark.parametrize("storage_dtype, tolerance", [("bfloat16", 2 ** -8), ("int8", 1 / 127)])
def test_compressed_storage_round_trip(tmp_path, storage_dtype, tolerance):
  embeddings = random_embeddings()
  version = storage.IndexRoot(str(tmp_path)).publish(
      embeddings, store_fingerprint="abc", checkpoint_step=None, storage_dtype=storage_dtype)
  restored = storage.load_embeddings(version)
  assert restored.dtype == np.float32
  # Relative to each row's largest value (int8) or each value (bfloat16).
  scale = np.abs(embeddings).max(axis=1, keepdims=True) if storage_dtype == "int8" else np.abs(embeddings)
  assert np.all(np.abs(restored - embeddings) <= tolerance * scale + 1e-7)


def test_only_the_newest_versions_are_kept(tmp_path):
  root = storage.IndexRoot(str(tmp_path), keep=2)
  for step in range(4):
    root.publish(random_embeddings(seed=step), store_fingerprint="abc", checkpoint_step=step)
  assert root.versions() == [3, 4]
  assert root.latest_version() == 4


def test_a_failed_publish_leaves_no_version_and_keeps_the_pointer(tmp_path):
  root = storage.IndexRoot(str(tmp_path))
  root.publish(random_embeddings(), store_fingerprint="abc", checkpoint_step=1)
  with pytest.raises(ValueError, match="storage dtype"):
    root.publish(random_embeddings(), store_fingerprint="abc", checkpoint_step=2,
                 storage_dtype="float16")
  assert root.versions() == [1] and root.latest_version() == 1
  assert os.listdir(tmp_path / "versions") == ["000001"]


def test_an_abandoned_partial_version_is_never_read_and_is_cleared(tmp_path):
  root = storage.IndexRoot(str(tmp_path))
  root.publish(random_embeddings(), store_fingerprint="abc", checkpoint_step=1)
  abandoned = tmp_path / "versions" / ".partial-000002-dead"
  abandoned.mkdir()
  # A pointer written under its temporary name by a publisher killed before the rename.
  stray_pointer = tmp_path / ".LATEST.0badf00d"
  stray_pointer.write_text('{"version": 2}')
  assert root.versions() == [1] and root.latest_version() == 1
  root.publish(random_embeddings(), store_fingerprint="abc", checkpoint_step=2)
  assert not abandoned.exists() and not stray_pointer.exists()
  assert root.latest_version() == 2


def test_exact_and_scann_versions_open_against_their_store(squad_block_store, tmp_path):
  embeddings = random_embeddings(rows=len(squad_block_store), dim=32)
  version = storage.IndexRoot(str(tmp_path)).publish(
      embeddings, store_fingerprint=squad_block_store.fingerprint, checkpoint_step=5,
      scann_config=ScannConfig())
  queries = embeddings[:8]
  exact = open_index(version, squad_block_store, backend="exact").searcher.search(queries, 5)
  approximate = open_index(version, squad_block_store, backend="scann").searcher.search(queries, 5)
  # A row's best match by inner product is usually itself; both backends agree on it.
  np.testing.assert_array_equal(exact.ids[:, 0], approximate.ids[:, 0])


def test_an_index_of_another_store_is_refused(squad_block_store, tmp_path):
  version = storage.IndexRoot(str(tmp_path)).publish(
      random_embeddings(rows=len(squad_block_store) - 1), store_fingerprint="other",
      checkpoint_step=1)
  with pytest.raises(InputError) as error:
    open_index(version, squad_block_store)
  message = str(error.value)
  assert "manifest.json" in message and "block_store" in message
  assert f"{len(squad_block_store) - 1} blocks" in message and str(len(squad_block_store)) in message


def test_embeddings_that_disagree_with_the_manifest_are_refused(tmp_path):
  version = storage.IndexRoot(str(tmp_path)).publish(
      random_embeddings(), store_fingerprint="abc", checkpoint_step=1)
  np.save(os.path.join(version.directory, storage.EMBEDDINGS), random_embeddings(rows=63))
  with pytest.raises(InputError, match=r"embeddings.npy.*\(63, 16\).*\(64, 16\)"):
    storage.load_embeddings(version)


def test_scann_backend_needs_a_scann_version(tmp_path):
  version = storage.IndexRoot(str(tmp_path)).publish(
      random_embeddings(), store_fingerprint="abc", checkpoint_step=1)
  with pytest.raises(InputError, match="no ScaNN index"):
    open_index(version, backend="scann")


def test_malformed_manifest_is_located(tmp_path):
  version = storage.IndexRoot(str(tmp_path)).publish(
      random_embeddings(), store_fingerprint="abc", checkpoint_step=1)
  with open(version.manifest_path, "w") as f:
    f.write('{"format": "orqa_realm.index",\n oops}')
  with pytest.raises(InputError, match=r"manifest.json, line 2"):
    storage.IndexRoot(str(tmp_path)).latest()
  with open(version.manifest_path, "w") as f:
    json.dump({"format": "something else"}, f)
  with pytest.raises(InputError, match="expected format"):
    storage.IndexRoot(str(tmp_path)).latest()

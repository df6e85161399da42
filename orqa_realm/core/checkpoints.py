"""Checkpoints of a training run (orbax).

Asynchronous saves every N steps, keep-N, and restores onto the current mesh by restoring into an
abstract state that carries the shardings. `CheckpointReader` is the read-only view of another
process or thread (the refresher, a warm start, evaluation). Directories are local paths or URIs
(`gs://...`), passed to orbax unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp

from orqa_realm.core import paths


class Checkpointer:
  """Saves and restores the train state under `directory/<step>`."""

  def __init__(self, directory: paths.PathLike, *, save_every_steps: int, keep: int,
               async_save: bool = True, on_commit: Callable[[], None] | None = None):
    """`on_commit` is called (on orbax's thread when saving asynchronously) once a checkpoint is
    complete on disk: the in-process refresher's wake-up call."""
    self.directory = str(paths.resolve(directory))
    self._on_commit = on_commit
    self._async = async_save
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=save_every_steps,
            enable_async_checkpointing=async_save, create=True,
            async_options=ocp.AsyncOptions(post_finalization_callback=on_commit)))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, *, force: bool = False) -> bool:
    """Starts saving `state` as checkpoint `step` if it is due (or forced); returns whether."""
    saved = self._manager.save(step, args=ocp.args.StandardSave(state), force=force)
    if saved and not self._async and self._on_commit is not None:
      self._on_commit()
    return saved

  def restore(self, step: int, abstract_state: Any) -> Any:
    """Restores checkpoint `step` into the structure, dtypes and shardings of `abstract_state`."""
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def wait(self) -> None:
    """Blocks until asynchronous saves have been committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


class CheckpointReader:
  """Read-only access to another process's (or thread's) checkpoints: the refresher's view.

  It lists only committed checkpoints (orbax writes each under a temporary name and renames it
  when complete) and restores parts of one, e.g. the block encoder without the optimizer state.
  """

  def __init__(self, directory: paths.PathLike):
    self.directory = str(paths.resolve(directory))
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(read_only=True))

  def latest_step(self) -> int | None:
    """The newest committed checkpoint, re-reading the directory."""
    self._manager.reload()
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    self._manager.reload()
    return list(self._manager.all_steps())

  def restore_params(self, step: int, abstract_params: Any) -> Any:
    """The `params` subtree named by `abstract_params` (shapes with shardings) of checkpoint
    `step`; the rest of the train state is not read."""
    target = {"params": abstract_params}
    restore_args = jax.tree.map(lambda leaf: ocp.ArrayRestoreArgs(sharding=leaf.sharding), target)
    # A manager of its own: one opened before the first checkpoint existed does not know the
    # directory holds a single item and refuses a non-Composite restore.
    manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(read_only=True))
    try:
      restored = manager.restore(step, args=ocp.args.PyTreeRestore(
          item=target, restore_args=restore_args, partial_restore=True))
    finally:
      manager.close()
    return restored["params"]

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> CheckpointReader:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def abstract_with_sharding(shapes: Any, sharding: jax.sharding.Sharding | Any) -> Any:
  """The target of a restore: `shapes` (e.g. from `jax.eval_shape`) placed with `sharding` (one
  sharding for every leaf, or a pytree of them matching `shapes`)."""
  if isinstance(sharding, jax.sharding.Sharding):
    return jax.tree.map(
        lambda shape: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding), shapes)
  return jax.tree.map(
      lambda shape, leaf_sharding: jax.ShapeDtypeStruct(shape.shape, shape.dtype,
                                                        sharding=leaf_sharding), shapes, sharding)

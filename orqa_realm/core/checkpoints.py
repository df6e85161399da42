"""Checkpoints of a training run (orbax).

Asynchronous saves every N steps, keep-N, and restores onto the current mesh by restoring into an
abstract state that carries the shardings. `CheckpointReader` is the read-only view of another
process or thread (the refresher, a warm start, evaluation). Directories are local paths or URIs
(`gs://...`), passed to orbax unchanged.

A checkpoint that does not restore (a file deleted or truncated by a crash of the storage, not of
the writer: orbax commits a checkpoint by renaming it complete) is never overwritten and never
silently skipped: a resuming run moves it aside to `broken_checkpoints/` beside the checkpoint
directory, with a warning naming it, and resumes from the newest one that restores; readers
refuse it with a message naming it and the checkpoints there are.
"""

from __future__ import annotations

import logging as logging_std
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from orqa_realm.core import paths
from orqa_realm.core.errors import InputError

BROKEN_CHECKPOINTS = "broken_checkpoints"
# A writer deletes at most a few old checkpoints at a time: listings that keep racing with it
# are a directory that is being removed.
_LISTING_ATTEMPTS = 5


class Restored(NamedTuple):
  """The newest checkpoint that restored, and where the newer broken ones were moved."""
  step: int
  state: Any
  moved_aside: list[str]  # the broken checkpoints' new paths, newest first


def _is_abandoned_read(unraisable) -> bool:
  """Whether a `sys.unraisablehook` report comes from orbax's reads abandoned by a failed
  restore: when one array fails, its siblings' tensorstore reads complete later, into a closed
  asyncio loop ("Event loop is closed"), and their coroutines are collected unfinished."""
  if isinstance(unraisable.exc_value, RuntimeError) and str(
      unraisable.exc_value) == "Event loop is closed":
    return True
  code = getattr(unraisable.object, "cr_code", None)
  return code is not None and "orbax" in code.co_filename


_QUIETED_DIRECTORIES: set[str] = set()


def _is_abandoned_read_failure(record: logging_std.LogRecord) -> bool:
  """Whether an asyncio log record reports a sibling read of a failed restore that failed too
  ("... exception was never retrieved", logged when its future is collected): its message names
  the checkpoint, under a directory given to `_quiet_abandoned_reads`."""
  message = record.getMessage()
  return "exception was never retrieved" in message and any(
      directory in message for directory in _QUIETED_DIRECTORIES)


def _quiet_abandoned_reads(directory: str) -> None:
  """Drops the reports of abandoned sibling reads of a restore from `directory` from now on
  (dozens of tracebacks, some after the process's own error message, that would bury it); every
  other report still reaches the previous hook or asyncio's logger."""
  _QUIETED_DIRECTORIES.add(directory)
  previous = sys.unraisablehook
  if getattr(previous, "drops_abandoned_reads", False):
    return

  def hook(unraisable) -> None:
    if not _is_abandoned_read(unraisable):
      previous(unraisable)

  hook.drops_abandoned_reads = True
  sys.unraisablehook = hook
  logging_std.getLogger("asyncio").addFilter(
      lambda record: not _is_abandoned_read_failure(record))


def describe_failure(error: Exception) -> str:
  """The first line of a restore error (tensorstore's run to pages), with its type."""
  lines = str(error).strip().splitlines()
  return f"{type(error).__name__}: {lines[0][:300] if lines else ''}"


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
            # Orbax refuses a callback without asynchronous saves; `save` calls it then.
            async_options=ocp.AsyncOptions(
                post_finalization_callback=on_commit if async_save else None)))

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

  def restore_newest(self, abstract_state: Any) -> Restored:
    """The newest checkpoint that restores into `abstract_state`.

    A checkpoint that fails is tried again once an older one has restored (the storage and the
    devices are then known to work: an out-of-memory or network error is not mistaken for a
    broken checkpoint); one that fails twice is moved aside (by the first process), with a
    warning. All processes agree on each attempt. When none restores, nothing is moved and the
    error names every failure."""
    # They are reported while the failing restore unwinds, and after.
    _quiet_abandoned_reads(self.directory)
    failures: dict[int, str] = {}
    restored = None
    for step in sorted(self.all_steps(), reverse=True):
      restored = self._try_restore(step, abstract_state, failures)
      if restored is not None:
        break
    if restored is None:
      raise InputError("no checkpoint restores (" + "; ".join(
          f"{step}: {failure}" for step, failure in failures.items()) + "): if the model's code "
          "or settings changed, train in a new --workdir", path=self.directory)
    if not failures:
      return Restored(*restored, moved_aside=[])
    # Freed before the retries: two train states need not fit on the devices at once.
    older_step, restored = restored[0], None
    broken = []
    for step in list(failures):  # newest first
      restored = self._try_restore(step, abstract_state, {})
      if restored is not None:
        break
      broken.append(step)
    if restored is None:
      restored = self._try_restore(older_step, abstract_state, failures)
    if restored is None:
      raise InputError(f"checkpoint {older_step} restored once, then not again: "
                       f"{failures[older_step]}", path=self.directory)
    return Restored(*restored, moved_aside=self._move_aside(broken))

  def _try_restore(self, step: int, abstract_state: Any,
                   failures: dict[int, str]) -> tuple[int, Any] | None:
    """(step, state), or None (the failure recorded in `failures`) when checkpoint `step` does
    not restore on every process."""
    error = None
    try:
      state = self.restore(step, abstract_state)
    # Whatever made it unreadable (a missing file, a truncated array, a corrupt manifest:
    # orbax and tensorstore raise ValueError, OSError, KeyError...), the caller tries another.
    except Exception as e:  # pylint: disable=broad-exception-caught
      error = describe_failure(e)
    if jax.process_count() > 1:
      # A damaged shard fails on the process that reads it: all resume from the same step.
      everywhere = multihost_utils.process_allgather(np.int32(error is None))
      if error is None and not np.all(everywhere):
        error = "failed on another process"
    if error is None:
      return step, state
    failures[step] = error
    logging.warning("checkpoint %d in %s does not restore: %s", step, self.directory, error)
    return None

  def _move_aside(self, steps: list[int]) -> list[str]:
    """Moves broken checkpoints `steps` to BROKEN_CHECKPOINTS beside the checkpoint directory
    (the step is saved again as training goes on; the broken copy is kept for inspection)."""
    moved = []
    broken_dir = epath.Path(self.directory).parent / BROKEN_CHECKPOINTS
    for step in steps:
      target = broken_dir / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
      if jax.process_index() == 0:
        broken_dir.mkdir(parents=True, exist_ok=True)
        (epath.Path(self.directory) / str(step)).rename(target)
        logging.warning("moved the broken checkpoint %d aside to %s", step, target)
      moved.append(str(target))
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("broken checkpoints moved aside")
    if steps:
      self._manager.reload()
    return moved

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

  def _reload(self) -> None:
    """Re-reads the directory, again if the writer deleted a checkpoint while it was listed
    (it keeps the newest --keep_checkpoints; orbax stats each step it listed)."""
    for attempt in range(_LISTING_ATTEMPTS):
      try:
        self._manager.reload()
        return
      except FileNotFoundError:
        if attempt == _LISTING_ATTEMPTS - 1:
          raise

  def latest_step(self) -> int | None:
    """The newest committed checkpoint, re-reading the directory."""
    self._reload()
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    self._reload()
    return list(self._manager.all_steps())

  def restore_params(self, step: int, abstract_params: Any) -> Any:
    """The `params` subtree named by `abstract_params` (shapes with shardings) of checkpoint
    `step`; the rest of the train state is not read."""
    target = {"params": abstract_params}
    # They are reported while a failing restore unwinds, and after.
    _quiet_abandoned_reads(self.directory)
    restore_args = jax.tree.map(lambda leaf: ocp.ArrayRestoreArgs(sharding=leaf.sharding), target)
    # A manager of its own: one opened before the first checkpoint existed does not know the
    # directory holds a single item and refuses a non-Composite restore.
    manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(read_only=True))
    try:
      restored = manager.restore(step, args=ocp.args.PyTreeRestore(
          item=target, restore_args=restore_args, partial_restore=True))
    # Any failure to read it is the checkpoint's (see `Checkpointer.restore_newest`).
    except Exception as e:  # pylint: disable=broad-exception-caught
      others = [other for other in manager.all_steps() if other != step]
      choice = (f"the run's other checkpoints are {others}: choose one (--checkpoint_step), or "
                "resume training, which moves a checkpoint that fails twice aside" if others
                else "the run has no other checkpoint")
      raise InputError(f"checkpoint {step} does not restore ({describe_failure(e)}); {choice}",
                       path=str(epath.Path(self.directory) / str(step))) from e
    finally:
      manager.close()
    # A partial restore hands back the abstract target where the checkpoint has no such array.
    missing = [f"params{jax.tree_util.keystr(path)}" for path, leaf
               in jax.tree_util.tree_leaves_with_path(restored["params"])
               if isinstance(leaf, jax.ShapeDtypeStruct)]
    if missing:
      more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
      raise InputError(f"checkpoint {step} holds no {', '.join(missing[:5])}{more}: it was saved "
                       "by another model than the one it is read into",
                       path=str(epath.Path(self.directory) / str(step)))
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

"""Checkpoints of a training run, and the run's saved configuration.

Checkpoints go through orbax's CheckpointManager: asynchronous saves every N steps, keep-N, and
restores onto the current mesh by restoring into an abstract state that carries the shardings. The
workdir also holds the model configuration a run started with; resuming with a different one is
refused, since the checkpoint's parameters would not fit (or, worse, would silently mean another
model).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import flags

from orqa_realm.core.errors import InputError

MODEL_CONFIG_FILE = "model_config.json"
FLAGS_FILE = "flags.txt"

WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory: checkpoints, model_config.json, flags, metrics. Training "
    "resumes from it; embedding, refreshing and evaluation read its checkpoints.")
CHECKPOINT_STEP = flags.DEFINE_integer(
    "checkpoint_step", -1, "Checkpoint of --workdir to embed or evaluate; -1: the newest.")


def checkpoint_dir(workdir: str) -> str:
  return os.path.abspath(os.path.join(workdir, "checkpoints"))


class Checkpointer:
  """Saves and restores the train state under `workdir/checkpoints/<step>`."""

  def __init__(self, workdir: str, *, save_every_steps: int, keep: int, async_save: bool = True,
               on_commit: Callable[[], None] | None = None):
    """`on_commit` is called (on orbax's thread when saving asynchronously) once a checkpoint is
    complete on disk: the in-process refresher's wake-up call."""
    self.directory = checkpoint_dir(workdir)
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

  def __init__(self, directory: str):
    self.directory = os.path.abspath(directory)
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


def abstract_with_sharding(shapes: Any, sharding: jax.sharding.Sharding) -> Any:
  """The target of a restore: `shapes` (e.g. from `jax.eval_shape`) placed with `sharding`."""
  return jax.tree.map(
      lambda shape: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding), shapes)


def read_model_config(workdir: str) -> dict[str, Any]:
  """The model configuration a run was started with (written by the trainer)."""
  path = os.path.join(workdir, MODEL_CONFIG_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError as e:
    raise InputError("not a training run directory: no model configuration", path=path) from e


def check_or_save_model_config(workdir: str, model_config: dict[str, Any]) -> None:
  """Saves the model configuration of a new run, or refuses one that differs from the saved one."""
  path = os.path.join(workdir, MODEL_CONFIG_FILE)
  # A JSON round trip, so that tuples and lists compare as they will be read back.
  model_config = json.loads(json.dumps(model_config))
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    if saved != model_config:
      differences = sorted(key for key in saved.keys() | model_config.keys()
                           if saved.get(key) != model_config.get(key))
      details = "; ".join(f"{key}: saved {saved.get(key)!r}, now {model_config.get(key)!r}"
                          for key in differences)
      raise InputError(f"this workdir holds a run of another model configuration ({details}); "
                       "use a new --workdir or the original flags", path=path)
    return
  os.makedirs(workdir, exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(model_config, f, indent=2, sort_keys=True)


def save_flags(workdir: str, flags_text: str) -> None:
  """Keeps the flags of the latest start of the run, loadable with --flagfile."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, FLAGS_FILE), "w", encoding="utf-8") as f:
    f.write(flags_text)

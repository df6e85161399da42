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
from typing import Any

import jax
import orbax.checkpoint as ocp

from orqa_realm.errors import InputError

MODEL_CONFIG_FILE = "model_config.json"
FLAGS_FILE = "flags.txt"


class Checkpointer:
  """Saves and restores the train state under `workdir/checkpoints/<step>`."""

  def __init__(self, workdir: str, *, save_every_steps: int, keep: int, async_save: bool = True):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=save_every_steps,
            enable_async_checkpointing=async_save, create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, *, force: bool = False) -> bool:
    """Starts saving `state` as checkpoint `step` if it is due (or forced); returns whether."""
    return self._manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def restore(self, step: int, abstract_state: Any) -> Any:
    """Restores checkpoint `step` into the structure, dtypes and shardings of `abstract_state`."""
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def wait(self) -> None:
    """Blocks until asynchronous saves have been committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def abstract_with_sharding(shapes: Any, sharding: jax.sharding.Sharding) -> Any:
  """The target of a restore: `shapes` (e.g. from `jax.eval_shape`) placed with `sharding`."""
  return jax.tree.map(
      lambda shape: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding), shapes)


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

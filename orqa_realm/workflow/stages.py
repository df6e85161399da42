"""A pipeline stage: one command (`python -m orqa_realm.COMMAND FLAGS`) and how to tell that its
output is complete.

A stage's *output identity* is a small JSON dict read back from what it wrote (a block store's
content fingerprint, a training run's id and final step, an index version's run and step): None
while the output is missing or incomplete. The identities of a stage's upstream stages enter its
fingerprint, so a stage whose input changed runs again even though its own output exists.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

from orqa_realm.core import checkpoints, run_directory
from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import BlockStore
from orqa_realm.encode import runs
from orqa_realm.index.storage import IndexRoot
from orqa_realm.workflow import records

Output = dict[str, Any]
# (the stage's output directory, its upstream stages' output identities) -> identity or None
OutputCheck = Callable[[str, Mapping[str, Output]], Output | None]


@dataclasses.dataclass(frozen=True)
class Stage:
  """One command of a pipeline."""
  name: str  # also the name of its record, e.g. "retriever"
  title: str  # what it does, for the console: "ICT pretraining of the retriever"
  command: str  # the orqa_realm module it runs: "train" for python -m orqa_realm.train
  args: tuple[str, ...]  # its flags: flagfiles first, the paths the pipeline derives last
  output: str  # the directory it writes
  check_output: OutputCheck
  after: tuple[str, ...] = ()  # the stages whose outputs it reads
  input_files: tuple[str, ...] = ()  # files no stage writes that it reads (content hashed)


def block_store_output(directory: str, upstream: Mapping[str, Output]) -> Output | None:
  """A block store is complete once its manifest exists (it is written into place atomically)."""
  del upstream
  if not os.path.exists(os.path.join(directory, "manifest.json")):
    return None
  store = BlockStore(directory)
  return dict(fingerprint=store.manifest["fingerprint"], num_blocks=len(store))


def files_output(*names: str) -> OutputCheck:
  """Complete once all `names` exist in the output directory; identified by their contents."""

  def check(directory: str, upstream: Mapping[str, Output]) -> Output | None:
    del upstream
    found = [os.path.join(directory, name) for name in names]
    if not all(os.path.isfile(path) for path in found):
      return None
    return {name: records.file_fingerprint(path) for name, path in zip(names, found)}

  return check


def training_output(directory: str, upstream: Mapping[str, Output]) -> Output | None:
  """A training run is complete once it has a checkpoint of its last step."""
  del upstream
  if not os.path.exists(os.path.join(directory, run_directory.RUN_FILE)):
    return None
  description = run_directory.read_run(directory)
  final_step = description.settings["train"]["num_train_steps"]
  with checkpoints.CheckpointReader(run_directory.checkpoint_dir(directory)) as reader:
    if final_step not in reader.all_steps():
      return None
  return dict(run_id=description.run_id, step=final_step)


def index_output(retriever_stage: str, store_stage: str = "", *,
                 store_dir: str = "") -> OutputCheck:
  """An index is complete once its newest version holds the final checkpoint of the retriever
  stage's run over the store stage's blocks (or over the store in `store_dir`, one no stage
  writes)."""

  def check(directory: str, upstream: Mapping[str, Output]) -> Output | None:
    version = IndexRoot(directory).latest() if os.path.isdir(directory) else None
    if version is None:
      return None
    retriever = upstream[retriever_stage]
    store_fingerprint = (upstream[store_stage]["fingerprint"] if store_stage
                         else BlockStore(store_dir).manifest["fingerprint"])
    run = runs.indexed_run(version) or {}
    if (run.get("run_id"), version.checkpoint_step, version.store_fingerprint) != (
        retriever["run_id"], retriever["step"], store_fingerprint):
      return None
    return dict(version=version.version, run_id=run["run_id"], step=version.checkpoint_step,
                store_fingerprint=version.store_fingerprint)

  return check


def stage_fingerprint(stage: Stage, upstream: Mapping[str, Output],
                      expand_flags: Callable[[list[str]], list[str]]) -> str:
  """The fingerprint of what the stage would run: its command, its flags with the flagfiles'
  contents, its input files' contents and its upstream outputs' identities."""
  if missing := [name for name in stage.after if name not in upstream]:
    raise InputError(f"stage {stage.name} runs after {missing}, which have not run")
  return records.fingerprint(dict(
      command=stage.command, flags=expand_flags(list(stage.args)),
      input_files={path: records.file_fingerprint(path) for path in stage.input_files},
      upstream={name: upstream[name] for name in stage.after}))

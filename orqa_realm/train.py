"""Trains a task:

    python -m orqa_realm.train --flagfile=configs/ict_demo.cfg

The flags are the settings of the loop (`training.loop.TrainConfig`), of the chosen task
(`--task`, its settings dataclass in `orqa_realm/tasks/`) and, for a run with an index
refresher (`--refresh_index`, or a task that mines the refreshed index), of the refresher and
the index. A flag that none of these read is refused. `--helpfull` lists them by group.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax

from orqa_realm import cli
from orqa_realm.core import config as settings_lib
from orqa_realm.core import parallel
from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.data import tfds_input
from orqa_realm.encode import embedding, refresher, runs
from orqa_realm.encode import multi_vector as multi_vector_encode
from orqa_realm.index import storage
from orqa_realm.index.handle import IndexHandle
from orqa_realm.tasks.base import Need, Task
from orqa_realm.tasks.registry import TASKS
from orqa_realm.training import loop

TaskName = Literal[tuple(sorted(TASKS))]


@dataclasses.dataclass(frozen=True)
class TrainCommand:
  """What to train, and whether an index refresher runs beside it."""
  task: TaskName = setting("ict", "The training objective.")
  refresh_index: bool = setting(
      False, "Run the index refresher as a thread of the trainer: each committed checkpoint is "
      "embedded and published under --index_dir; the index version in use and its staleness "
      "are logged. (Or run `python -m orqa_realm.refresh` beside it.)")


SETTINGS = settings_lib.FlagBinder("train")
SETTINGS.bind("train", TrainCommand)
SETTINGS.bind("loop", loop.TrainConfig)
SETTINGS.bind("index refresher", loop.RefreshConfig)
SETTINGS.bind("index", embedding.IndexSearch)
SETTINGS.bind("index publishing", embedding.IndexConfig)
SETTINGS.bind("multi-vector index publishing", multi_vector_encode.MultiVectorIndexConfig)
SETTINGS.bind("tfds", tfds_input.TFDSSettings)
for _name, _task in TASKS.items():
  SETTINGS.bind(f"task {_name}", _task.config_class)


def task_settings(task_class: type[Task]):
  """The task's settings from the flags, its retriever settled against the run or index its
  settings name (whose architecture it must keep)."""
  group = f"task {task_class.name}"
  task_config = SETTINGS.build(group)
  saved = task_class.saved_retriever(task_config)
  if saved is None:
    return task_config
  return dataclasses.replace(task_config, retriever=settings_lib.settle(
      saved.config, SETTINGS.given_settings(group, "retriever"),
      fixed=task_class.fixed_retriever_fields, source=saved.source))


def uses_index(command: TrainCommand) -> bool:
  """Whether the run has an index refresher or reads a refreshed index."""
  return command.refresh_index or Need.INDEX in TASKS[command.task].needs


def check_flags() -> TrainCommand:
  """The command's settings, once every given flag is known to be read by this run: the loop's,
  the task's and, with an index, the refresher's and the index's."""
  command = SETTINGS.build("train")
  if command.refresh_index and not TASKS[command.task].trains_block_tower:
    raise InputError(f"--task={command.task} trains no block tower: a refresher would have "
                     "nothing to index", field="refresh_index")
  groups = ["train", "loop", "tfds", f"task {command.task}"]
  dense = TASKS[command.task].index_kind == storage.DENSE
  if uses_index(command):
    # A multi-vector run's index is read by no task: there is no index handle to configure.
    groups += ["index refresher", "index"] if dense else ["index refresher"]
  if command.refresh_index:
    groups.append("index publishing" if dense else "multi-vector index publishing")
  SETTINGS.check_read(groups, f"train --task={command.task}")
  return command


def run_refresher(task: Task, workdir: str, index_config, index_handle: IndexHandle | None
                  ) -> refresher.Refresher:
  """The refresher of this run's checkpoints: dense embeddings or, for a multi-vector task,
  block vectors; it wakes the index handle (if any) when it publishes."""
  notify = (lambda version: index_handle.notify()) if index_handle is not None else None
  if task.index_kind == storage.DENSE:
    run = runs.retriever_run_of(workdir, task.name, task.run_model())
    return refresher.refresher_for_run(run, task.store, index_config, on_publish=notify)
  model = task.run_model()
  run = runs.MultiVectorRunInfo(workdir, task.config.retriever, model["tokenizer_fingerprint"])
  return refresher.multi_vector_refresher_for_run(run, task.store, task.tokenizer, index_config,
                                                  on_publish=notify)


def main() -> None:
  command = check_flags()
  task_class = TASKS[command.task]
  config = SETTINGS.build("loop")
  if not config.workdir:
    raise InputError("--workdir is required", field="workdir")
  if config.multihost:
    parallel.initialize_multihost()
  tfds_input.use_settings(SETTINGS.build("tfds"))
  refresh = SETTINGS.build("index refresher")
  dense = task_class.index_kind == storage.DENSE
  index_config = SETTINGS.build("index publishing" if dense else
                                "multi-vector index publishing")
  task = task_class(task_settings(task_class), config.task_context())
  print(f"task {task.name} on {jax.device_count()} {jax.devices()[0].platform} device(s), "
        f"{jax.process_count()} host(s); global batch {config.batch_size}", flush=True)
  settings = dict(task=dataclasses.asdict(task.config), train=dataclasses.asdict(config))
  if uses_index(command):
    settings.update(refresh=dataclasses.asdict(refresh))
  if uses_index(command) and dense:
    settings.update(index=dataclasses.asdict(SETTINGS.build("index")))
  if command.refresh_index:
    settings.update(index=dataclasses.asdict(index_config))
  refresher_thread, index_handle = None, None
  poll_seconds = refresh.refresher.poll_seconds
  try:
    if uses_index(command) and dense:
      # The handle refuses versions built from another corpus or by another run (e.g. by a
      # refresher process started with other settings, or for another run into the same root).
      index_handle = IndexHandle(
          index_config.root(), task.store, backend=index_config.backend,
          poll_seconds=poll_seconds,
          check_version=functools.partial(runs.check_embedded_by_run_in,
                                          workdir=config.workdir))
    # One refresher per run: the first host's (the others read its versions).
    if command.refresh_index and jax.process_index() == 0:
      worker = run_refresher(task, config.workdir, index_config, index_handle)
      refresher_thread = refresher.RefresherThread(worker, poll_seconds=poll_seconds).start()
    loop.train(task, config, refresh=refresh, settings=settings,
               flags_text=SETTINGS.given_flags_text(),
               on_checkpoint_commit=refresher_thread.notify if refresher_thread else None,
               index_handle=index_handle)
  finally:
    if refresher_thread is not None:
      refresher_thread.close()
    if index_handle is not None:
      index_handle.close()


if __name__ == "__main__":
  cli.run(main, SETTINGS)

"""A run directory and the description every run saves of itself (`run.json`).

    WORKDIR/
      run.json        task, model (what the checkpoints need to be used), settings (all of them)
      flags.txt       the flags given at the latest start, loadable with --flagfile
      checkpoints/    orbax, one directory per step
      metrics.jsonl, tensorboard/

`run_id`, drawn when the run is created, tells two runs apart wherever their checkpoints are used
(an index records the run it was embedded from, so that another run's query encoder, even of the
same architecture and step, is refused). `model` is compared on every start: resuming a run with
another model is refused (its checkpoints would not fit, or, worse, would silently mean another
model). `settings` records
the task's and the loop's settings of the latest start. Commands that use a run's checkpoints
(embed, evaluate, refresh, warm starts) read `model` instead of asking for it again.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

from orqa_realm.core import config, paths
from orqa_realm.core.errors import InputError

RUN_FILE = "run.json"
FLAGS_FILE = "flags.txt"
CHECKPOINTS = "checkpoints"
FORMAT = "orqa_realm.run"
# 2: BERT layers stacked under nn.scan (version 1 checkpoints hold one entry per layer).
FORMAT_VERSION = 2
# The file runs of earlier layouts wrote instead of run.json.
_OLD_MODEL_CONFIG = "model_config.json"


@dataclasses.dataclass(frozen=True)
class RunDescription:
  """What `run.json` says of a run."""
  workdir: str
  task: str
  model: dict[str, Any]  # JSON data: what the checkpoints need to be used
  settings: dict[str, Any]  # JSON data: the task's and the loop's settings
  run_id: str | None  # None for a run created before runs had ids (until it is resumed)


def is_same_run(recorded: dict[str, Any], workdir: str, run_id: str | None) -> bool:
  """Whether `recorded` (what an index or a cache says made it: {workdir, run_id}) names the run
  (`workdir`, `run_id`): by id, which survives moving the run; by directory for runs created
  before runs had ids."""
  if recorded.get("run_id") and run_id:
    return recorded["run_id"] == run_id
  return recorded["workdir"] == workdir


def same_model_source(saved: dict[str, Any], expected: dict[str, Any]) -> bool:
  """Whether two descriptions of what built an index (a run's `workdir` and `run_id`, or neither
  for pretrained weights; its step and settings) name the same thing: the same run as
  `is_same_run` knows it, everything else equal."""
  if ("workdir" in saved) != ("workdir" in expected):
    return False
  settings = lambda description: {key: value for key, value in description.items()
                                  if key not in ("workdir", "run_id")}
  same_run = "workdir" not in saved or is_same_run(saved, expected["workdir"],
                                                   expected.get("run_id"))
  return same_run and settings(saved) == settings(expected)


def checkpoint_dir(workdir: paths.PathLike) -> str:
  """The run's checkpoint directory, as orbax takes it (absolute, or the URI)."""
  return str(paths.resolve(workdir) / CHECKPOINTS)


def _json_round_trip(value: Any) -> Any:
  """`value` as it will read back from JSON (tuples become lists)."""
  return json.loads(json.dumps(value))


def read_run(workdir: paths.PathLike) -> RunDescription:
  """The run in `workdir`, or an error saying why it is not one (none, or an older layout)."""
  directory = paths.resolve(workdir)
  path = directory / RUN_FILE
  if not path.exists():
    if (directory / _OLD_MODEL_CONFIG).exists():
      raise InputError(f"this run was written by an earlier orqa_realm ({_OLD_MODEL_CONFIG}, no "
                       f"{RUN_FILE}): its checkpoints do not record the settings they need to be "
                       "used; retrain it (or re-embed from a new run)", path=str(directory))
    raise InputError(f"not a training run directory: no {RUN_FILE}", path=str(directory))
  try:
    saved = paths.read_json(path)
  except ValueError as e:
    raise InputError(f"malformed run description: {e}", path=str(path)) from e
  if saved.get("format") != FORMAT:
    raise InputError(f"expected format {FORMAT!r}", path=str(path), field="format")
  if saved.get("format_version") != FORMAT_VERSION:
    raise InputError(f"this run was written by another orqa_realm (run format version "
                     f"{saved.get('format_version')}, this one reads {FORMAT_VERSION}): its "
                     "checkpoints are laid out otherwise; retrain it (or re-embed from a new run)",
                     path=str(path), field="format_version")
  return RunDescription(str(directory), saved["task"], saved["model"], saved["settings"],
                        saved.get("run_id"))


def has_checkpoints(workdir: paths.PathLike) -> bool:
  """Whether the run in `workdir` has saved a checkpoint (a step directory, complete or not)."""
  directory = paths.resolve(workdir) / CHECKPOINTS
  return directory.exists() and any(child.name.isdigit() for child in directory.iterdir())


def start_run(workdir: paths.PathLike, *, task: str, model: dict[str, Any],
              settings: dict[str, Any], flags_text: str = "", write: bool = True) -> None:
  """Saves the description of a new run, or of a resumed one after checking its model is the
  saved one. `flags_text`: the flags given, kept as flags.txt. `write=False` only checks (the
  hosts other than the first of a multi-host run)."""
  directory = paths.resolve(workdir)
  model, settings = _json_round_trip(model), _json_round_trip(settings)
  run_id = None
  if (directory / RUN_FILE).exists() or (directory / _OLD_MODEL_CONFIG).exists():
    saved = read_run(directory)
    # Kept only while the run has checkpoints: one started again from scratch is another run.
    run_id = saved.run_id if has_checkpoints(directory) else None
    if saved.task != task:
      raise InputError(f"this workdir holds a run of task {saved.task!r}, not {task!r}; use a new "
                       "--workdir", path=str(directory / RUN_FILE), field="task")
    changed = config.differences(saved.model, model)
    if changed:
      raise InputError(f"this workdir holds a run of another model ({'; '.join(changed)}); use a "
                       "new --workdir or the original settings", path=str(directory / RUN_FILE))
  if not write:
    return
  directory.mkdir(parents=True, exist_ok=True)
  paths.write_json_atomic(directory / RUN_FILE, dict(
      format=FORMAT, format_version=FORMAT_VERSION, task=task, model=model, settings=settings,
      run_id=run_id or uuid.uuid4().hex))
  if flags_text:
    (directory / FLAGS_FILE).write_text(flags_text, encoding="utf-8")

"""Runs a pipeline's stages in order, each as its own process, skipping the complete ones.

A stage is skipped when its record says it completed with the same fingerprint and its output
still has the identity recorded. Otherwise it runs: over its own partial output when the record
has the same fingerprint (a training stage resumes from its checkpoints), or, when its settings
or inputs changed, after its old output is moved to `WORKDIR/superseded/` (nothing is deleted).

Each stage is a subprocess (`python -m orqa_realm.COMMAND`): its flags are checked as when it is
run by hand, its devices and memory are released when it ends, and its console output (progress
bars, step lines) reaches the terminal unchanged. SIGTERM and SIGINT reach the running stage,
as a SIGTERM, on which the command stops as it would (training saves a checkpoint first), and
the pipeline stops; a stage whose pipeline is killed outright gets a SIGTERM too.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from orqa_realm.core.errors import InputError
from orqa_realm.workflow import flagfiles, records
from orqa_realm.workflow.stages import Output, Stage, stage_fingerprint

SUPERSEDED = "superseded"
_PR_SET_PDEATHSIG = 1  # prctl option, linux/prctl.h
Status = Literal["ran", "skipped"]


class StageFailed(Exception):
  """A stage's command exited with an error (it printed its own message)."""

  def __init__(self, stage: Stage, returncode: int):
    super().__init__(f"stage {stage.name} failed (exit code {returncode})")
    self.stage, self.returncode = stage, returncode


@dataclasses.dataclass(frozen=True)
class StageResult:
  """How one stage went in this invocation."""
  stage: Stage
  status: Status
  seconds: float  # over every attempt with the same fingerprint, earlier invocations included
  output: Output


def command_line(stage: Stage) -> list[str]:
  return [sys.executable, "-m", f"orqa_realm.{stage.command}", *stage.args]


def _stop_with_parent() -> None:
  """In the stage's process before it starts: SIGTERM it when the pipeline dies, even by
  SIGKILL (Linux's parent-death signal), so that no stage outlives its pipeline and races a
  rerun's."""
  if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def run_command(argv: list[str]) -> int:
  """Runs `argv` with the terminal as its console, in a session of its own so that a Ctrl-C
  reaches it once, through the pipeline: SIGINT or SIGTERM of the pipeline becomes a SIGTERM of
  the stage (on which training saves a checkpoint), and the pipeline waits for it to stop, then
  exits with 128 + the signal."""
  received: list[int] = []
  process: subprocess.Popen | None = None

  def forward(signum: int, frame: Any) -> None:
    del frame
    received.append(signum)
    if process is not None:
      process.send_signal(signal.SIGTERM)

  # Installed first: a signal between starting the stage and waiting for it is not lost.
  previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}
  try:
    process = subprocess.Popen(argv, start_new_session=True, preexec_fn=_stop_with_parent)
    if received:
      process.send_signal(signal.SIGTERM)
    returncode = process.wait()
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
  if received:
    raise SystemExit(128 + received[0])
  return returncode


def _move_aside(workdir: str, stage: Stage, why: str) -> None:
  """Moves a stage's old output to WORKDIR/superseded/NAME-TIME, telling the user why."""
  if not os.path.exists(stage.output):
    return
  stem = os.path.join(workdir, SUPERSEDED, f"{stage.name}-{time.strftime('%Y%m%d-%H%M%S')}")
  target, copy = stem, 1
  while os.path.exists(target):  # moved aside twice within a second
    copy += 1
    target = f"{stem}.{copy}"
  os.makedirs(os.path.dirname(target), exist_ok=True)
  os.rename(stage.output, target)
  print(f"  {why}: moved its previous output aside to {target}", flush=True)


def checked_output(stage: Stage, upstream: dict[str, Output]) -> Output | None:
  """The stage's output identity; None when it is missing, incomplete or damaged (a block store
  with a column lost, say): then the stage runs again."""
  try:
    return stage.check_output(stage.output, upstream)
  except (InputError, OSError, ValueError, KeyError) as e:
    print(f"  {stage.output} does not read back ({e})", flush=True)
    return None


def run_stage(workdir: str, stage: Stage, upstream: dict[str, Output], number: str,
              execute: Callable[[list[str]], int]) -> StageResult:
  """Runs (or skips) one stage; the result says which, with its output's identity."""
  fingerprint = stage_fingerprint(stage, upstream, flagfiles.expand)
  record = records.read_record(workdir, stage.name)
  same_settings = record is not None and record.fingerprint == fingerprint
  if same_settings and record.complete:
    output = checked_output(stage, upstream)
    if output == record.output:
      print(f"[{number}] {stage.name}: complete, skipped ({stage.title}; {stage.output})",
            flush=True)
      return StageResult(stage, "skipped", record.seconds, output)
    print(f"[{number}] {stage.name}: its output changed since it completed: running it again",
          flush=True)
    _move_aside(workdir, stage, "changed output")
    same_settings = False
  argv = command_line(stage)
  print(f"[{number}] {stage.name}: {stage.title}\n  python {shlex.join(argv[1:])}", flush=True)
  if not same_settings:
    _move_aside(workdir, stage, "settings or inputs changed" if record else "not this pipeline's")
  elif os.path.exists(stage.output):
    print(f"  resuming: {stage.output} holds an attempt with the same settings", flush=True)
  seconds, attempts = (record.seconds, record.attempts) if same_settings else (0.0, 0)
  started_record = records.StageRecord(stage.name, fingerprint, False, None, seconds,
                                       attempts + 1, argv[1:])
  records.write_record(workdir, started_record)
  started = time.time()
  try:
    returncode = execute(argv)
  finally:
    seconds += time.time() - started
    records.write_record(workdir, dataclasses.replace(started_record, seconds=seconds))
  if returncode:
    raise StageFailed(stage, returncode)
  output = checked_output(stage, upstream)
  if output is None:
    raise InputError(f"stage {stage.name} ended without completing its output",
                     path=stage.output)
  records.write_record(workdir, dataclasses.replace(started_record, complete=True, output=output,
                                                    seconds=seconds))
  print(f"  {stage.name} done in {seconds:.0f}s", flush=True)
  return StageResult(stage, "ran", seconds, output)


def run_pipeline(workdir: str, stages: Sequence[Stage],
                 execute: Callable[[list[str]], int] = run_command) -> list[StageResult]:
  """Runs `stages` in order (each after the ones it reads); their results."""
  names = [stage.name for stage in stages]
  if len(set(names)) != len(names):
    raise ValueError(f"stage names repeat: {names}")
  outputs: dict[str, Output] = {}
  results = []
  for position, stage in enumerate(stages, start=1):
    upstream = {name: outputs[name] for name in stage.after if name in outputs}
    result = run_stage(workdir, stage, upstream, f"{position}/{len(stages)}", execute)
    outputs[stage.name] = result.output
    results.append(result)
  return results

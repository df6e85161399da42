"""What a pipeline remembers of each stage (`WORKDIR/pipeline/STAGE.json`): the fingerprint of
the settings and inputs it ran with, whether it completed, the identity of its output, and the
time it took over all attempts.

A record is written before a stage starts (incomplete) and again when it completes, so that a
pipeline killed mid-stage knows, when run again, that the partial output is its own: a training
stage then resumes from its checkpoints instead of starting over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

from orqa_realm.core import paths
from orqa_realm.core.errors import InputError
from orqa_realm.serving.system import PIPELINE_RECORDS

RECORDS = PIPELINE_RECORDS  # ask and serve recognise a pipeline's workdir by it
# Files larger than this are fingerprinted by size and modification time, not content: a
# Wikipedia dump would take minutes to hash on every run.
HASHED_FILE_BYTES = 256 << 20


@dataclasses.dataclass(frozen=True)
class StageRecord:
  """One stage's record."""
  stage: str
  fingerprint: str  # of the command, its flags (flagfiles inlined) and its inputs
  complete: bool
  output: dict[str, Any] | None  # the output's identity when complete (see stages.py)
  seconds: float  # over every attempt with this fingerprint
  attempts: int
  command: list[str]  # the command line, to rerun the stage by hand


def fingerprint(value: Any) -> str:
  """A short, stable hash of JSON data."""
  text = json.dumps(value, sort_keys=True, ensure_ascii=False)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_fingerprint(path: str) -> str:
  """The content hash of a file (its size and modification time beyond HASHED_FILE_BYTES)."""
  if not os.path.isfile(path):
    raise InputError("no such file", path=path)
  status = os.stat(path)
  if status.st_size > HASHED_FILE_BYTES:
    return f"size {status.st_size}, modified {status.st_mtime_ns}"
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()[:16]


def record_path(workdir: str, stage: str) -> str:
  return os.path.join(workdir, RECORDS, f"{stage}.json")


def read_record(workdir: str, stage: str) -> StageRecord | None:
  """The stage's record, None if it never started (or its record is unreadable: it runs again)."""
  path = record_path(workdir, stage)
  try:
    with open(path, encoding="utf-8") as f:
      return StageRecord(**json.load(f))
  except FileNotFoundError:
    return None
  except (ValueError, TypeError):  # cut short or edited by hand: the stage runs again
    return None


def write_record(workdir: str, record: StageRecord) -> None:
  """Writes the record atomically (a kill leaves the previous one or the new one)."""
  paths.write_json_atomic(record_path(workdir, record.stage), dataclasses.asdict(record))

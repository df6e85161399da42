"""A cross-encoder teacher's scores of training candidates, computed once and cached.

Distillation (`tasks/distill.py`) needs the teacher's score of every (query, candidate) pair it
trains on. Scoring them is the expensive part on a small machine, so the scores are kept in one
`.npz` file with the fingerprint of what they were computed from: the block store, the queries
with their candidate blocks, and the teacher (its run id and checkpoint). A cache whose
fingerprint differs in any of the three is refused, naming which, rather than silently
distilling scores of other pairs or of another teacher. The file is written under a temporary
name and renamed into place: a killed run leaves no half-written cache.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from etils import epath

from orqa_realm.core import paths
from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import BlockStore
from orqa_realm.encode.runs import CrossEncoderRun


def pairs_fingerprint(queries: Sequence[str], block_ids: np.ndarray) -> str:
  """A hash of the queries and their candidate blocks ([queries, candidates])."""
  digest = hashlib.sha256()
  for query, row in zip(queries, np.asarray(block_ids, np.int64)):
    digest.update(query.encode("utf-8") + b"\0" + row.tobytes())
  return digest.hexdigest()[:16]


def cache_fingerprint(store: BlockStore, queries: Sequence[str], block_ids: np.ndarray,
                      teacher: CrossEncoderRun) -> dict[str, Any]:
  """What cached teacher scores were computed from."""
  return dict(store=store.fingerprint, pairs=pairs_fingerprint(queries, block_ids),
              teacher=dict(run_id=teacher.run_id, checkpoint_step=teacher.step,
                           workdir=teacher.workdir))


WHAT = dict(store="block store", pairs="queries and candidate blocks", teacher="teacher")


def check_fingerprint(found: dict[str, Any], expected: dict[str, Any], path: str) -> None:
  """Refuses cached scores computed from another store, other pairs or another teacher."""
  for key, name in WHAT.items():
    if found.get(key) != expected[key]:
      raise InputError(
          f"the cached teacher scores were computed for another {name} ({found.get(key)}, not "
          f"{expected[key]}): delete the file or pass another --teacher_scores", path=path)


def load_or_compute(path: str, fingerprint: dict[str, Any],
                    compute: Callable[[], np.ndarray]) -> np.ndarray:
  """The scores cached at `path` when their fingerprint is `fingerprint`; otherwise (no file)
  `compute()`'s, saved there. An empty `path` computes without caching."""
  if not path:
    return compute()
  file = paths.resolve(path)
  if file.exists():
    with file.open("rb") as f, np.load(f, allow_pickle=False) as cached:
      check_fingerprint(json.loads(str(cached["fingerprint"])), fingerprint, str(file))
      return np.asarray(cached["scores"])
  scores = np.asarray(compute(), np.float32)
  file.parent.mkdir(parents=True, exist_ok=True)
  temporary = epath.Path(file.parent) / f".{file.name}.{uuid.uuid4().hex[:8]}"
  with temporary.open("wb") as f:
    np.savez(f, scores=scores, fingerprint=np.array(json.dumps(fingerprint, sort_keys=True)))
  temporary.rename(file)
  return scores

"""Cached teacher scores: computed once and read back; refused, naming what differs, when the
store, the pairs or the teacher is another."""

import numpy as np
import pytest

from orqa_realm.core.errors import InputError
from orqa_realm.encode import teacher_scores

FINGERPRINT = dict(store="s1", pairs=teacher_scores.pairs_fingerprint(["q"], np.array([[1, 2]])),
                   teacher=dict(run_id="r1", checkpoint_step=4, workdir="/runs/ce"))


def test_scores_are_computed_once_then_read_back(tmp_path):
  path = str(tmp_path / "cache" / "teacher.npz")
  calls = []
  compute = lambda: calls.append(1) or np.array([[1.5, -2.0]], np.float32)
  first = teacher_scores.load_or_compute(path, FINGERPRINT, compute)
  second = teacher_scores.load_or_compute(path, FINGERPRINT, compute)
  assert calls == [1]
  np.testing.assert_array_equal(first, second)
  assert [p.name for p in (tmp_path / "cache").iterdir()] == ["teacher.npz"]  # no temporaries
  assert teacher_scores.load_or_compute("", FINGERPRINT, compute) is not None and calls == [1, 1]


@pytest.mark.parametrize("key, other, named", [
    ("store", "s2", "another block store"),
    ("pairs", teacher_scores.pairs_fingerprint(["q"], np.array([[1, 3]])),
     "another queries and candidate blocks"),
    ("teacher", dict(run_id="r1", checkpoint_step=5, workdir="/runs/ce"), "another teacher")])
def test_a_cache_of_other_inputs_is_refused(tmp_path, key, other, named):
  path = str(tmp_path / "teacher.npz")
  teacher_scores.load_or_compute(path, FINGERPRINT, lambda: np.zeros((1, 2), np.float32))
  with pytest.raises(InputError, match=f"computed for {named}"):
    teacher_scores.load_or_compute(path, dict(FINGERPRINT, **{key: other}),
                                   lambda: np.zeros((1, 2), np.float32))
  assert teacher_scores.pairs_fingerprint(["q"], np.array([[1, 2]])) != (
      teacher_scores.pairs_fingerprint(["q2"], np.array([[1, 2]])))

"""A run's identity: drawn when it is created, kept when it is resumed or moved."""

import json
import shutil

from orqa_realm.core import run_directory


def test_a_run_keeps_its_id_when_resumed_and_moved(tmp_path):
  run_directory.start_run(tmp_path / "a", task="ict", model={"m": 1}, settings={})
  first = run_directory.read_run(tmp_path / "a").run_id
  assert first and len(first) == 32
  (tmp_path / "a" / run_directory.CHECKPOINTS / "1").mkdir(parents=True)
  run_directory.start_run(tmp_path / "a", task="ict", model={"m": 1}, settings={"s": 2})
  assert run_directory.read_run(tmp_path / "a").run_id == first
  shutil.move(tmp_path / "a", tmp_path / "b")
  assert run_directory.read_run(tmp_path / "b").run_id == first
  run_directory.start_run(tmp_path / "c", task="ict", model={"m": 1}, settings={})
  assert run_directory.read_run(tmp_path / "c").run_id != first


def test_a_run_started_again_from_scratch_is_another_run(tmp_path):
  """Its checkpoints deleted, the directory's next start trains other weights: a new id, so
  that indexes of the old weights are refused."""
  run_directory.start_run(tmp_path, task="ict", model={"m": 1}, settings={})
  first = run_directory.read_run(tmp_path).run_id
  run_directory.start_run(tmp_path, task="ict", model={"m": 1}, settings={})
  assert run_directory.read_run(tmp_path).run_id != first


def test_a_run_from_before_ids_gets_one_when_resumed(tmp_path):
  run_file = tmp_path / run_directory.RUN_FILE
  run_file.write_text(json.dumps(dict(format=run_directory.FORMAT,
                                      format_version=run_directory.FORMAT_VERSION, task="ict",
                                      model={"m": 1}, settings={})))
  assert run_directory.read_run(tmp_path).run_id is None
  (tmp_path / run_directory.CHECKPOINTS / "7").mkdir(parents=True)
  run_directory.start_run(tmp_path, task="ict", model={"m": 1}, settings={})
  assert run_directory.read_run(tmp_path).run_id


def test_what_built_an_index_names_a_run_by_its_id_and_everything_else_by_value():
  built = dict(workdir="/runs/a", run_id="x1", step=100, scale=100)
  same = run_directory.same_model_source
  assert same(built, dict(built, workdir="/moved/a"))  # the run moved: still its id
  assert not same(built, dict(built, run_id="x2"))  # the directory trained again: another run
  assert not same(built, dict(built, step=200))
  assert not same(built, dict(built, scale=50))
  before_ids = dict(workdir="/runs/a", run_id=None, step=100)
  assert same(before_ids, dict(before_ids))
  assert not same(before_ids, dict(before_ids, workdir="/runs/b"))
  assert same(dict(bert="minilm"), dict(bert="minilm"))  # pretrained weights: no run
  assert not same(dict(bert="minilm"), dict(bert="minilm", workdir="/runs/a", run_id="x1"))

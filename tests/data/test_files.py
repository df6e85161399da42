"""Reading text files with located errors, and which directories may be replaced."""

import gzip
import json
import pathlib

import pytest

from orqa_realm.core.errors import InputError
from orqa_realm.data import files

OWNER = files.Owner("manifest.json", "orqa_realm.test")


def test_lines_are_numbered_and_windows_newlines_read_as_newlines(tmp_path):
  path = tmp_path / "a.txt.gz"
  path.write_bytes(gzip.compress(b"first\r\nsecond\nthird"))
  assert list(files.read_lines(path)) == [(1, "first\n"), (2, "second\n"), (3, "third")]


def test_a_byte_that_is_not_utf8_is_located_by_line(tmp_path):
  path = tmp_path / "a.json"
  path.write_bytes(b'{\n  "a": 1,\n  "b": "caf\xe9"\n}\n')
  with pytest.raises(InputError, match=r"a.json, line 3: not UTF-8: byte b'\\xe9' at byte 12 "
                                       "of the line"):
    files.read_json(path)
  with pytest.raises(InputError, match=r"a.json, line 3: not UTF-8"):
    list(files.read_lines(path))


def test_a_truncated_gzip_is_located_after_the_lines_read(tmp_path):
  path = tmp_path / "a.jsonl.gz"
  compressed = gzip.compress(b"".join(b'{"n": %d}\n' % i for i in range(20000)))
  path.write_bytes(compressed[:len(compressed) // 2])
  with pytest.raises(InputError, match=r"a.jsonl.gz, line \d+: damaged or truncated gzip stream"):
    list(files.read_jsonl(path))
  with pytest.raises(InputError, match=r"a.jsonl.gz: damaged or truncated gzip stream \(.*\)$"):
    files.read_json(path)


def test_only_a_missing_empty_or_owned_directory_may_be_replaced(tmp_path):
  files.check_replaceable(tmp_path / "missing", OWNER)
  (tmp_path / "empty").mkdir()
  files.check_replaceable(tmp_path / "empty", OWNER)
  owned = tmp_path / "owned"
  owned.mkdir()
  (owned / "manifest.json").write_text(json.dumps({"format": "orqa_realm.test"}))
  files.check_replaceable(owned, OWNER)
  (owned / "manifest.json").write_text(json.dumps({"format": "orqa_realm.other"}))
  with pytest.raises(InputError, match="did not write"):
    files.check_replaceable(owned, OWNER)
  (owned / "manifest.json").write_text("[not a manifest")
  with pytest.raises(InputError, match="did not write"):
    files.check_replaceable(owned, OWNER)
  (tmp_path / "file").write_text("")
  with pytest.raises(InputError, match="is a file, not a directory"):
    files.check_replaceable(tmp_path / "file", OWNER)


def test_a_directory_written_meanwhile_by_someone_else_is_not_replaced(tmp_path):
  """Checked again after the writing: the work is dropped, their files kept."""
  target = tmp_path / "out"
  with pytest.raises(InputError, match="did not write"):
    with files.atomic_directory(target, OWNER) as partial:
      (tmp_path / "out").mkdir()
      (target / "theirs.txt").write_text("keep")
      (pathlib.Path(partial) / "ours.txt").write_text("x")
  assert (target / "theirs.txt").read_text() == "keep"
  assert not any(p.name.startswith("out.partial") for p in tmp_path.iterdir())

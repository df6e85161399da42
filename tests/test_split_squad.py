"""Splitting SQuAD by article: whole articles, disjoint, seeded; the CLI's files."""

import json
import subprocess
import sys

import pytest

from orqa_realm.data import files
from orqa_realm.data.qa import read_squad, split_squad_by_article
from orqa_realm.core.errors import InputError
from tests.conftest import DEMO_SQUAD, REPO_ROOT, subprocess_env


def test_articles_are_split_whole_and_disjoint():
  dataset = files.read_json(DEMO_SQUAD)
  train, test = split_squad_by_article(dataset, 0.25, seed=0)
  titles = lambda split: [article["title"] for article in split["data"]]
  assert len(titles(test)) == 9 and len(titles(train)) == 27
  assert not set(titles(train)) & set(titles(test))
  assert sorted(titles(train) + titles(test)) == sorted(titles(dataset))
  by_title = {article["title"]: article for article in dataset["data"]}
  assert all(article == by_title[article["title"]] for article in train["data"] + test["data"])
  assert split_squad_by_article(dataset, 0.25, seed=0) == (train, test)
  assert titles(split_squad_by_article(dataset, 0.25, seed=1)[1]) != titles(test)
  with pytest.raises(InputError, match="at least two articles"):
    split_squad_by_article(dict(data=dataset["data"][:1]), 0.5, seed=0)


def test_cli_writes_squad_files_that_keep_gold_paragraphs(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "orqa_realm.split_squad", f"--squad={DEMO_SQUAD}",
       "--test_fraction=0.5", f"--output_dir={tmp_path}"],
      cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  train, test = read_squad(tmp_path / "train.json"), read_squad(tmp_path / "test.json")
  everything = {example.qid: example for example in read_squad(DEMO_SQUAD)}
  assert len(train) + len(test) == len(everything) == 8038
  assert all(everything[example.qid] == example for example in train + test)
  with open(tmp_path / "split.json") as f:
    summary = json.load(f)
  assert summary["test"]["questions"] == len(test)

"""Splits a SQuAD file by article, for open-domain QA on held-out articles.

    python -m orqa_realm.split_squad --squad=demo_data/squad/dev-v1.1.public36.json.gz \\
        --test_fraction=0.5 --output_dir=runs/qa/squad_demo

writes `train.json` and `test.json` (SQuAD format, each with whole articles, so a question's gold
paragraph keeps its id) and `split.json` (which articles went where). The retrieval corpus stays
every paragraph of the original file: test questions are asked over the whole corpus, and their
articles were never seen in training.
"""

from __future__ import annotations

import dataclasses
import json

from orqa_realm import cli
from orqa_realm.core import config as settings_lib
from orqa_realm.core import paths
from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.data import files
from orqa_realm.data.qa import split_squad_by_article


@dataclasses.dataclass(frozen=True)
class SplitCommand:
  """Which SQuAD file is split, how, and where the halves go."""
  squad: str = setting("", "SQuAD v1.1 JSON (optionally .gz) to split.")
  test_fraction: float = setting(0.5, "Fraction of the articles held out.")
  split_seed: int = setting(0, "Seeds which articles are held out.")
  output_dir: str = setting("", "Where train.json and test.json go.")


SETTINGS = settings_lib.FlagBinder("split_squad")
SETTINGS.bind("split", SplitCommand)


def main() -> None:
  command = SETTINGS.build("split")
  if not (command.squad and command.output_dir):
    raise InputError("--squad and --output_dir are required")
  paths.check_writable(command.output_dir)
  train, test = split_squad_by_article(files.read_json(command.squad), command.test_fraction,
                                      command.split_seed)
  output_dir = paths.resolve(command.output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  summary = dict(source=command.squad, test_fraction=command.test_fraction,
                 seed=command.split_seed)
  for name, dataset in (("train", train), ("test", test)):
    (output_dir / f"{name}.json").write_text(json.dumps(dataset, ensure_ascii=False),
                                             encoding="utf-8")
    summary[name] = dict(
        articles=[article["title"] for article in dataset["data"]],
        questions=sum(len(paragraph.get("qas", [])) for article in dataset["data"]
                      for paragraph in article.get("paragraphs", [])))
  (output_dir / "split.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False),
                                         encoding="utf-8")
  print(json.dumps({name: dict(articles=len(summary[name]["articles"]),
                               questions=summary[name]["questions"])
                    for name in ("train", "test")}))


if __name__ == "__main__":
  cli.run(main, SETTINGS)

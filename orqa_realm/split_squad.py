"""Splits a SQuAD file by article, for open-domain QA on held-out articles.

    python -m orqa_realm.split_squad --squad=demo_data/squad/dev-v1.1.public36.json.gz \\
        --test_fraction=0.5 --output_dir=runs/qa/squad_demo

writes `train.json` and `test.json` (SQuAD format, each with whole articles, so a question's gold
paragraph keeps its id) and `split.json` (which articles went where). The retrieval corpus stays
every paragraph of the original file: test questions are asked over the whole corpus, and their
articles were never seen in training.
"""

from __future__ import annotations

import json
import os
import sys
from absl import app, flags

from orqa_realm.data import files
from orqa_realm.data.qa import split_squad_by_article
from orqa_realm.core.errors import InputError

_SQUAD = flags.DEFINE_string("squad", None, "SQuAD v1.1 JSON (optionally .gz) to split.")
_TEST_FRACTION = flags.DEFINE_float("test_fraction", 0.5, "Fraction of the articles held out.")
_SEED = flags.DEFINE_integer("split_seed", 0, "Seeds which articles are held out.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where train.json and test.json go.")


def main(argv):
  del argv
  if not (_SQUAD.value and _OUTPUT_DIR.value):
    sys.exit("error: --squad and --output_dir are required")
  try:
    train, test = split_squad_by_article(files.read_json(_SQUAD.value), _TEST_FRACTION.value,
                                        _SEED.value)
  except InputError as e:
    sys.exit(f"error: {_SQUAD.value}: {e}")
  os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
  summary = dict(source=_SQUAD.value, test_fraction=_TEST_FRACTION.value, seed=_SEED.value)
  for name, dataset in (("train", train), ("test", test)):
    with open(os.path.join(_OUTPUT_DIR.value, f"{name}.json"), "w", encoding="utf-8") as f:
      json.dump(dataset, f, ensure_ascii=False)
    summary[name] = dict(
        articles=[article["title"] for article in dataset["data"]],
        questions=sum(len(paragraph.get("qas", [])) for article in dataset["data"]
                      for paragraph in article.get("paragraphs", [])))
  with open(os.path.join(_OUTPUT_DIR.value, "split.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2, ensure_ascii=False)
  print(json.dumps({name: dict(articles=len(summary[name]["articles"]),
                               questions=summary[name]["questions"])
                    for name in ("train", "test")}))


if __name__ == "__main__":
  app.run(main)

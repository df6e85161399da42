"""A ColBERT run against PyLate trained on the same data: the reference row of issue 21.

PyLate (lightonai/pylate) installs here with a CPU torch only at 1.2.0, which pins
transformers 4.48 and sentence-transformers 4.0, older than this project's: it lives in a venv of
its own, and the reference takes three steps, the middle one in that venv:

    # 1. (this venv) the run's training batches, the store's blocks and the evaluation queries
    python benchmarks/pylate_reference.py --stage=export --workdir=runs/colbert_scifact \
        --output_dir=runs/pylate/scifact \
        --eval_beir_queries=../shared/data/scifact/queries.test.tsv.gz \
        --eval_beir_qrels=../shared/data/scifact/qrels.test.txt
    # 2. (PyLate's venv) the same model trained on them, in the same order, and searched exactly
    python3 -m venv pylate_venv && pylate_venv/bin/pip install pylate==1.2.0
    pylate_venv/bin/python benchmarks/pylate_train.py --data_dir=runs/pylate/scifact
    # 3. (this venv) both runs' exact MaxSim rankings scored by the same metric, side by side
    python benchmarks/pylate_reference.py --stage=compare --workdir=runs/colbert_scifact \
        --output_dir=runs/pylate/scifact \
        --eval_beir_queries=../shared/data/scifact/queries.test.tsv.gz \
        --eval_beir_qrels=../shared/data/scifact/qrels.test.txt

The export replays the run's own data pipeline: its training pairs and BM25 hard negatives (as
`run.json` records them), its batches step by step (`question_indices` of its seed), and its
hyperparameters. A block is given to PyLate as its title and text joined by a space (the run's
`--block_format=joined` reads the same wordpieces, title first).
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np
from absl import app, flags

from common import machine_description, print_table
from retrieval_queries import load_queries

from orqa_realm.core import config as settings_lib
from orqa_realm.core import parallel, paths
from orqa_realm.core.errors import InputError
from orqa_realm.data import beir, files
from orqa_realm.data.blocks import BlockStore, open_store
from orqa_realm.data.pretrained import resolve_model_dir
from orqa_realm.data.qa import QAEvaluation, question_indices
from orqa_realm.encode import runs
from orqa_realm.encode import multi_vector as encode
from orqa_realm.index import bm25
from orqa_realm.index.multi_vector_search import ExactMultiVectorSearcher
from orqa_realm.index.searcher import SearchResult
from orqa_realm.modeling import multi_vector
from orqa_realm.tasks.pairs import TrainingPairs, build_examples

_STAGE = flags.DEFINE_enum("stage", None, ["export", "compare"],
                           "export: write PyLate's inputs; compare: score both runs.")
_WORKDIR = flags.DEFINE_string("workdir", "", "A ColBERT run trained with BM25 hard negatives.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "", "The exchange directory with PyLate's venv.")

SETTINGS = settings_lib.FlagBinder("benchmarks/pylate_reference.py")
SETTINGS.bind("questions", QAEvaluation, QAEvaluation(recall_ks=(1, 5, 20)))
SETTINGS.bind("beir", beir.BEIREvaluation)

RANKING = "pylate_ranking.npz"  # written by benchmarks/pylate_train.py
TRAINING_LOG = "pylate_training.json"  # written by benchmarks/pylate_train.py


def training_pairs(recorded: dict) -> TrainingPairs:
  """The run's recorded training pairs (`run.json` settings.task.pairs) as settings."""
  if recorded["retrieval"] != "bm25":
    raise InputError(f"the reference replays BM25 hard negatives; this run mined them with "
                     f"{recorded['retrieval']}", field="workdir")
  return TrainingPairs(
      qa_dataset=recorded["qa_dataset"], beir_queries=recorded["beir_queries"],
      beir_qrels=recorded["beir_qrels"], negative_depth=recorded["negative_depth"],
      bm25=bm25.BM25Config(bm25.BM25Settings(**recorded["bm25"]["settings"]),
                           recorded["bm25"]["directory"]))


def block_texts(store: BlockStore) -> list[str]:
  """Every block as PyLate reads it: title and text joined, as --block_format=joined packs them."""
  return [f"{store.title(block)} {store.text(block)}".strip() for block in range(len(store))]


def write_json_lines(path: str, values: list) -> None:
  """One JSON value a line, as benchmarks/pylate_train.py reads them."""
  with open(path, "w", encoding="utf-8") as stream:
    stream.writelines(json.dumps(value) + "\n" for value in values)


def export(run_json: dict, store: BlockStore, query_texts: list[str], output_dir: str) -> None:
  """Writes the run's training batches, hyperparameters, the blocks and the queries."""
  task, train = run_json["settings"]["task"], run_json["settings"]["train"]
  model = run_json["model"]["multi_vector"]
  if model["kind"] != "colbert" or task["teacher"]["workdir"]:
    raise InputError("the reference is ColBERT trained without a teacher", field="workdir")
  pairs = training_pairs(task["pairs"])
  examples = build_examples(pairs, store, bm25.open_or_build(store, pairs.bm25),
                            task["hard_negatives_per_question"], train["seed"]).examples
  texts = block_texts(store)
  os.makedirs(output_dir, exist_ok=True)
  batches = []
  for step in range(train["num_train_steps"]):
    batch = [examples[i] for i in question_indices(len(examples), train["batch_size"],
                                                   seed=train["seed"], step=step)]
    batches.append({"step": step, "queries": [e.question for e in batch],
                    "positives": [texts[e.positive] for e in batch],
                    "negatives": [[texts[n] for n in e.hard_negatives] for e in batch]})
  write_json_lines(os.path.join(output_dir, "batches.jsonl"), batches)
  paths.write_json_atomic(os.path.join(output_dir, "settings.json"), {
      "bert_dir": resolve_model_dir(task["source"]["bert"]), "dim": model["dim"],
      "query_length": model["query_length"], "document_length": model["block_length"],
      "markers": model["markers"], "query_augmentation": model["query_augmentation"],
      **{name: train[name] for name in ("batch_size", "num_train_steps", "learning_rate",
                                         "warmup_steps", "weight_decay", "max_grad_norm",
                                         "seed")}})
  write_json_lines(os.path.join(output_dir, "blocks.jsonl"), texts)
  write_json_lines(os.path.join(output_dir, "queries.jsonl"), query_texts)
  print(f"wrote {train['num_train_steps']} batches of {train['batch_size']} from "
        f"{len(examples)} examples, {len(texts)} blocks and {len(query_texts)} queries to "
        f"{output_dir}")


def compare(workdir: str, store: BlockStore, tokenizer, queries, output_dir: str) -> None:
  """Our run's exact MaxSim and PyLate's, scored by the same metric, side by side."""
  mesh = parallel.make_mesh()
  run = runs.restore_multi_vector_run(workdir, None, mesh)
  runs.check_tokenizer(run, tokenizer.fingerprint, store.directory)
  ranking = np.load(os.path.join(output_dir, RANKING))
  pylate_log = files.read_json(os.path.join(output_dir, TRAINING_LOG))
  if ranking["ids"].shape[0] != len(queries.texts):
    raise InputError(f"PyLate ranked {ranking['ids'].shape[0]} queries, the evaluation set has "
                     f"{len(queries.texts)}: export again with the same --eval_* flags",
                     path=os.path.join(output_dir, RANKING))
  corpus = encode.encode_blocks(store, tokenizer, run.params, run.config, mesh=mesh)
  vectors = encode.encode_queries(queries.texts, tokenizer, run.params, run.config, mesh=mesh)
  searcher = ExactMultiVectorSearcher(
      corpus, functools.partial(multi_vector.scores, run.config), mesh=mesh)
  ours = searcher.search_sets(vectors, min(queries.depth, len(store)))
  our_quality = queries.quality(ours)
  pylate_quality = queries.quality(SearchResult(ranking["ids"], ranking["scores"]))
  print(f"{machine_description()}\n{run.workdir} (checkpoint {run.step}) and PyLate "
        f"{pylate_log['pylate_version']} (torch {pylate_log['torch_version']}) on the same "
        f"{pylate_log['steps']} batches of {pylate_log['batch_size']}; {len(queries.texts)} "
        f"queries over {len(store)} blocks, exact MaxSim over float32 vectors")
  rows = [["orqa_realm (JAX)", *(f"{v:.4f}" for v in our_quality.values())],
          ["PyLate (PyTorch, reference)", *(f"{v:.4f}" for v in pylate_quality.values())]]
  print_table("\nThe same ColBERT, trained and searched by each", ["trained and searched by",
                                                                   *our_quality], rows)


def main(argv):
  del argv
  if not _WORKDIR.value or not _OUTPUT_DIR.value:
    raise InputError("--workdir and --output_dir are required")
  run_json = files.read_json(os.path.join(_WORKDIR.value, "run.json"))
  source = run_json["settings"]["task"]["source"]
  store, tokenizer = open_store(source["block_store"], source["bert"])
  queries = load_queries(store, SETTINGS.build("questions"), SETTINGS.build("beir"))
  if _STAGE.value == "export":
    export(run_json, store, queries.texts, _OUTPUT_DIR.value)
  else:
    compare(_WORKDIR.value, store, tokenizer, queries, _OUTPUT_DIR.value)


if __name__ == "__main__":
  SETTINGS.define()
  flags.mark_flag_as_required("stage")
  app.run(main)

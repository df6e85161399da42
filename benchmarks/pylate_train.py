"""PyLate's side of benchmarks/pylate_reference.py: run in PyLate's own venv (pylate 1.2.0 and its
CPU torch; orqa_realm, JAX and absl are not there, hence argparse).

    pylate_venv/bin/python benchmarks/pylate_train.py --data_dir=runs/pylate/scifact

Reads what `pylate_reference.py --stage=export` wrote: trains `pylate.models.ColBERT` from the same
BERT directory with the same projection size, query and document lengths, markers ([unused0] /
[unused1], as ours), query augmentation and punctuation skiplist (PyLate's defaults, as ours), on
the same batches in the same order with PyLate's in-batch contrastive loss, AdamW and the same
warmup-then-linear-decay schedule, clipping and weight decay; then encodes every block and query
with it and ranks all blocks by exact MaxSim (`pylate.scores.colbert_scores`). Writes the top
`--depth` ids and scores and a training log for `--stage=compare`.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pylate
import torch
import transformers
from pylate import losses, models
from pylate.scores import colbert_scores

RANKING = "pylate_ranking.npz"
TRAINING_LOG = "pylate_training.json"


def read_lines(path: str) -> list:
  """Every JSON line of `path`."""
  with open(path, encoding="utf-8") as stream:
    return [json.loads(line) for line in stream]


def build_model(settings: dict) -> models.ColBERT:
  """A fresh ColBERT over the exported BERT directory, read as orqa_realm's run reads it."""
  if not settings["markers"] or not settings["query_augmentation"]:
    raise ValueError("the reference reads queries and blocks as ColBERT does: markers and query "
                     "augmentation on")
  return models.ColBERT(model_name_or_path=settings["bert_dir"],
                        embedding_size=settings["dim"], query_length=settings["query_length"],
                        document_length=settings["document_length"], query_prefix="[unused0]",
                        document_prefix="[unused1]", attend_to_expansion_tokens=False,
                        device="cpu")


def train(model: models.ColBERT, batches: list[dict], settings: dict) -> float:
  """Trains `model` on `batches` in order; returns training examples per second."""
  loss_fn = losses.Contrastive(model=model)
  optimizer = torch.optim.AdamW(model.parameters(), lr=settings["learning_rate"],
                                weight_decay=settings["weight_decay"])
  schedule = transformers.get_linear_schedule_with_warmup(
      optimizer, settings["warmup_steps"], settings["num_train_steps"])
  model.train()
  started = time.perf_counter()
  for batch in batches:
    negatives = list(zip(*batch["negatives"]))  # one column of texts per hard negative
    features = [model.tokenize(batch["queries"], is_query=True),
                model.tokenize(batch["positives"], is_query=False),
                *(model.tokenize(list(column), is_query=False) for column in negatives)]
    loss = loss_fn(features)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), settings["max_grad_norm"])
    optimizer.step()
    schedule.step()
    optimizer.zero_grad()
    if batch["step"] % 10 == 0:
      print(f"step {batch['step']}: loss {loss.item():.4f}", flush=True)
  seconds = time.perf_counter() - started
  return len(batches) * settings["batch_size"] / seconds


def padded(vectors: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
  """[n, longest, dim] vectors and their [n, longest] mask."""
  longest = max(len(v) for v in vectors)
  out = torch.zeros(len(vectors), longest, vectors[0].shape[1])
  mask = torch.zeros(len(vectors), longest)
  for row, v in enumerate(vectors):
    out[row, :len(v)] = torch.from_numpy(v)
    mask[row, :len(v)] = 1
  return out, mask


@torch.no_grad()
def rank(model: models.ColBERT, blocks: list[str], queries: list[str], depth: int,
         chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
  """[queries, depth] ids and scores of every block ranked by exact MaxSim."""
  model.eval()
  block_vectors = model.encode(blocks, is_query=False, batch_size=32, show_progress_bar=True)
  query_vectors = torch.from_numpy(np.stack(model.encode(queries, is_query=True,
                                                         batch_size=32)))
  scores = torch.empty(len(queries), len(blocks))
  for start in range(0, len(blocks), chunk):
    documents, mask = padded(block_vectors[start:start + chunk])
    scores[:, start:start + chunk] = colbert_scores(query_vectors, documents, mask)
  top = torch.topk(scores, min(depth, len(blocks)), dim=1)
  return top.indices.numpy(), top.values.numpy()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", required=True, help="pylate_reference.py's --output_dir")
  parser.add_argument("--depth", type=int, default=100, help="blocks ranked per query")
  args = parser.parse_args()
  with open(os.path.join(args.data_dir, "settings.json"), encoding="utf-8") as stream:
    settings = json.load(stream)
  torch.manual_seed(settings["seed"])
  torch.set_num_threads(os.cpu_count())
  model = build_model(settings)
  batches = read_lines(os.path.join(args.data_dir, "batches.jsonl"))
  examples_per_second = train(model, batches, settings)
  started = time.perf_counter()
  ids, scores = rank(model, read_lines(os.path.join(args.data_dir, "blocks.jsonl")),
                     read_lines(os.path.join(args.data_dir, "queries.jsonl")), args.depth)
  index_seconds = time.perf_counter() - started
  np.savez(os.path.join(args.data_dir, RANKING), ids=ids, scores=scores)
  with open(os.path.join(args.data_dir, TRAINING_LOG), "w", encoding="utf-8") as stream:
    json.dump({"pylate_version": pylate.__version__, "torch_version": torch.__version__,
               "steps": len(batches), "batch_size": settings["batch_size"],
               "examples_per_second": examples_per_second, "index_seconds": index_seconds},
              stream)
  print(f"trained {len(batches)} steps at {examples_per_second:.2f} examples/s; ranked "
        f"{len(ids)} queries in {index_seconds:.0f} s -> {args.data_dir}")


if __name__ == "__main__":
  main()

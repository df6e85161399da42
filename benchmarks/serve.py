"""Load on `serve`'s HTTP API: requests/s and latency (p50, p99) at 1, 8 and 32 concurrent
clients against localhost, beside the same questions answered in-process without HTTP (one at a
time, and in batches of --max_batch_size): what the server adds, and what batching buys.

    python benchmarks/serve.py --workdir=runs/squad_pipeline [--requests=64]

Questions are the held-out questions of the pipeline's split (or --questions=FILE, one a line).
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import numpy as np
from absl import app, flags

from common import machine_description, print_table
from orqa_realm.core.config import FlagBinder
from orqa_realm.core.errors import InputError
from orqa_realm.serving.http_api import ServeConfig, make_app, serving_in_background
from orqa_realm.serving.system import QASystem, SystemSource

SETTINGS = FlagBinder("benchmarks/serve.py")
SETTINGS.bind("system", SystemSource)
SETTINGS.bind("serve", ServeConfig)
_REQUESTS = flags.DEFINE_integer("requests", 64, "Requests per concurrency level.")
_QUESTIONS = flags.DEFINE_string("questions", "", "Questions, one a line; default: the "
                                 "pipeline's held-out questions (WORKDIR/qa/test.json).")
_CONCURRENCY = (1, 8, 32)


def load_questions(source: SystemSource, count: int) -> list[str]:
  if _QUESTIONS.value:
    with open(_QUESTIONS.value, encoding="utf-8") as f:
      questions = [line.strip() for line in f if line.strip()]
  else:
    path = os.path.join(source.workdir, "qa", "test.json")
    if not os.path.isfile(path):
      raise InputError("no held-out questions: pass --questions", path=path)
    with open(path, encoding="utf-8") as f:
      questions = [qa["question"] for article in json.load(f)["data"]
                   for paragraph in article["paragraphs"] for qa in paragraph["qas"]]
  return [questions[i % len(questions)] for i in range(count)]


async def load(url: str, questions: list[str], concurrency: int) -> tuple[float, np.ndarray]:
  """(requests/s, per-request seconds) of `concurrency` clients sharing `questions`."""
  import httpx  # pylint: disable=g-import-not-at-top

  pending = list(reversed(questions))
  latencies = []
  async with httpx.AsyncClient(base_url=url, timeout=600) as client:
    async def worker():
      while pending:
        question = pending.pop()
        started = time.perf_counter()
        response = await client.post("/answer", json={"question": question, "top_blocks": 3})
        response.raise_for_status()
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    elapsed = time.perf_counter() - started
  return len(questions) / elapsed, np.asarray(latencies)


def main(argv):
  del argv
  source, config = SETTINGS.build("system"), SETTINGS.build("serve")
  print(machine_description())
  system = QASystem.open(source)
  depth = min(config.max_top_blocks, system.searcher.num_rows)
  questions = load_questions(source, _REQUESTS.value)
  rows = []
  # In-process references: compiled first for each batch size they use.
  for batch_size in (1, config.max_batch_size):
    batches = [questions[i:i + batch_size] for i in range(0, len(questions), batch_size)]
    system.answer(batches[0], depth)
    system.answer(batches[-1], depth)
    started = time.perf_counter()
    for batch in batches:
      system.answer(batch, depth)
    elapsed = time.perf_counter() - started
    rows.append([f"in-process, batches of {batch_size}", f"{len(questions) / elapsed:.1f}",
                 "", "", ""])
  app_ = make_app(system, config)
  with serving_in_background(app_) as url:
    for concurrency in _CONCURRENCY:
      asyncio.run(load(url, questions[:4 * concurrency], concurrency))  # compiles its batch sizes
      batches_before = len(app_.state.batchers["answer"].batch_sizes)
      per_second, latencies = asyncio.run(load(url, questions, concurrency))
      sizes = app_.state.batchers["answer"].batch_sizes[batches_before:]
      rows.append([f"HTTP, {concurrency} client{'s' * (concurrency > 1)}", f"{per_second:.1f}",
                   f"{1000 * np.percentile(latencies, 50):.0f}",
                   f"{1000 * np.percentile(latencies, 99):.0f}", f"{np.mean(sizes):.1f}"])
  print_table(f"{len(questions)} questions, {system.description['num_blocks']} blocks, "
              f"{system.description['run']}",
              ["", "questions/s", "p50 ms", "p99 ms", "mean batch"], rows)


if __name__ == "__main__":
  SETTINGS.define()
  app.run(main)

"""Serves a trained system over HTTP:

    python -m orqa_realm.serve --workdir=runs/squad_pipeline --port=8080

then `curl -s localhost:8080/answer -H 'Content-Type: application/json' -d '{"question": "who
won super bowl 50?"}'`, or open
http://localhost:8080/ to ask on a page. --workdir is what `ask` takes (a pipeline's workdir, an
ORQA run, or a retriever run with --index_dir). Concurrent requests are answered in batches of
at most --max_batch_size; `orqa_realm/serving/http_api.py` documents the API and its limits.
"""

from __future__ import annotations

import time

import uvicorn

from orqa_realm import cli
from orqa_realm.core import config as settings_lib
from orqa_realm.encode.rerank import RerankSettings
from orqa_realm.serving.http_api import ServeConfig, make_app
from orqa_realm.serving.system import QASystem, SystemSource

SETTINGS = settings_lib.FlagBinder("serve")
SETTINGS.bind("serve", ServeConfig)
SETTINGS.bind("system", SystemSource)
SETTINGS.bind("rerank", RerankSettings)


def main() -> None:
  reranks = SETTINGS.given("rerank_workdir")
  SETTINGS.check_read(["serve", "system"] + (["rerank"] if reranks else []), "serve")
  config, source = SETTINGS.build("serve"), SETTINGS.build("system")
  started = time.time()
  system = QASystem.open(source, SETTINGS.build("rerank") if reranks else RerankSettings())
  # Compiled before the first request, not during it: every query batch shape a request batch
  # can take (powers of two up to --max_batch_size). A reranker's pairs are padded to lengths
  # rounded up to 64 wordpieces: those the warm-up does not reach compile on first use.
  batch = 1
  while True:
    system.answer(["warm-up question"] * batch,
                  min(config.max_top_blocks, system.searcher.num_rows))
    if batch >= config.max_batch_size:
      break
    batch *= 2
  print(f"serving {system.description['run']} over {system.description['num_blocks']} blocks "
        f"(ready in {time.time() - started:.0f}s) at http://{config.host}:{config.port}/",
        flush=True)
  uvicorn.run(make_app(system, config), host=config.host, port=config.port, log_level="warning")


if __name__ == "__main__":
  cli.run(main, SETTINGS)

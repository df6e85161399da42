"""Expands the blocks of a store with generated questions (doc2query), for BM25 to index.

    python -m orqa_realm.expand --block_store=runs/blocks/squad_demo --questions_per_block=5

writes BLOCK_STORE/expansions/doc2query (`--expansion_name`); then
`evaluate --retrieval=bm25 --bm25_expansions=doc2query ...` indexes each block's title, text and
questions. A killed run, run again with the same flags, finishes the missing chunks only.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

from orqa_realm import cli
from orqa_realm.core import config as settings_lib
from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import BlockStore
from orqa_realm.encode.doc2query import ExpansionConfig, expand_store


@dataclasses.dataclass(frozen=True)
class ExpandCommand:
  """Which store is expanded."""
  block_store: str = setting(
      "", "Block store whose blocks get questions (written inside it, under expansions/).")


SETTINGS = settings_lib.FlagBinder("expand")
SETTINGS.bind("expand", ExpandCommand)
SETTINGS.bind("expansion", ExpansionConfig)


def main() -> None:
  command = SETTINGS.build("expand")
  if not command.block_store:
    raise InputError("--block_store is required", field="block_store")
  config = SETTINGS.build("expansion")
  if config.decoder_workdir and SETTINGS.given("decoder"):
    raise InputError("--decoder_workdir generates with its run's decoder: --decoder is not "
                     "read with it", field="decoder")
  store = BlockStore(command.block_store)
  started = time.time()
  expansions = expand_store(store, config, show_progress=sys.stderr.isatty())
  counts = [len(expansions.questions(block)) for block in range(len(store))]
  summary = dict(num_blocks=len(store), num_questions=sum(counts),
                 questions_per_block=round(sum(counts) / max(1, len(store)), 2),
                 blocks_without_questions=counts.count(0), fingerprint=expansions.fingerprint,
                 seconds=round(time.time() - started, 1))
  print(f"wrote {store.directory}/expansions/{expansions.name}: {json.dumps(summary)}")
  print(f"block 0 ({store.title(0)}): {json.dumps(expansions.questions(0))}")


if __name__ == "__main__":
  cli.run(main, SETTINGS)

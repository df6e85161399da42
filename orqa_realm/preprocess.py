"""Builds a block store from raw documents.

    python -m orqa_realm.preprocess --corpus=squad:demo_data/squad/dev-v1.1.public36.json.gz \\
        --tokenizer=minilm --output_dir=/tmp/squad_blocks

or with a flagfile: `python -m orqa_realm.preprocess --flagfile=configs/preprocess_squad_demo.cfg`.
With --salient_spans it also finds the store's salient spans (REALM; needs the `ner` extra); without
--corpus it only adds them to the existing store at --output_dir. With --grow_from=STORE it adds
--corpus's documents to STORE (`embed --grow` then embeds only the new blocks).
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
from orqa_realm.data import salient_spans, tfds_input
from orqa_realm.data.blocks import BlockStore, build_block_store, grow_block_store
from orqa_realm.data.documents import CORPUS_READERS, load_documents
from orqa_realm.data.pretrained import resolve_model_dir
from orqa_realm.data.tokenization import Tokenizer


@dataclasses.dataclass(frozen=True)
class PreprocessCommand:
  """Which documents become which block store."""
  corpus: str = setting("", f"Documents as FORMAT:PATH, FORMAT one of {sorted(CORPUS_READERS)}.")
  tokenizer: str = setting(
      "minilm", "A Hugging Face model directory with vocab.txt or tokenizer.json, or the name of "
      "a packaged model ('minilm').")
  output_dir: str = setting("", "Where to write the block store.")
  max_block_length: int = setting(
      288, "Wordpieces per encoded block, [CLS] title [SEP] text [SEP] included.")
  max_title_length: int = setting(32, "Titles are cut to this many wordpieces.")
  overwrite: bool = setting(
      False, "Replace an existing store (or its salient spans) at --output_dir.")
  salient_spans: bool = setting(
      False, "Also find the named entities and dates of every block (REALM's salient spans) "
      "with spaCy and write them beside the store; without --corpus, annotate the existing "
      "store at --output_dir.")
  ner_batch_size: int = setting(256, "Blocks per spaCy batch.")
  grow_from: str = setting(
      "", "A block store that --corpus's documents are added to (after its blocks, with its "
      "lengths and tokenizer), written to --output_dir (this store's own directory replaces "
      "it): its index then grows by embedding only the new blocks (embed --grow).")


SETTINGS = settings_lib.FlagBinder("preprocess")
SETTINGS.bind("preprocess", PreprocessCommand)
SETTINGS.bind("tfds", tfds_input.TFDSSettings)


def main() -> None:
  command = SETTINGS.build("preprocess")
  tfds_input.use_settings(SETTINGS.build("tfds"))
  if not command.output_dir:
    raise InputError("--output_dir is required", field="output_dir")
  started = time.time()
  show_progress = sys.stderr.isatty()
  if command.grow_from:
    if not command.corpus:
      raise InputError("--grow_from adds the documents of --corpus, which is not given",
                       field="corpus")
    for name in ("max_block_length", "max_title_length"):
      if SETTINGS.given(name):
        raise InputError(f"--{name} is the grown store's own (--grow_from)", field=name)
    tokenizer = Tokenizer(resolve_model_dir(command.tokenizer))
    store = grow_block_store(load_documents(command.corpus), tokenizer, command.grow_from,
                             command.output_dir, source=command.corpus,
                             show_progress=show_progress)
    base = store.lineage[-1]
    summary = dict(grown_from=command.grow_from, base_blocks=base["num_blocks"],
                   added_blocks=len(store) - base["num_blocks"],
                   added_documents=store.manifest["num_documents"] - base["num_documents"],
                   num_blocks=len(store), fingerprint=store.fingerprint,
                   seconds=round(time.time() - started, 1))
    print(f"wrote {store.directory}: {json.dumps(summary)}")
  elif command.corpus:
    tokenizer = Tokenizer(resolve_model_dir(command.tokenizer))
    store = build_block_store(
        load_documents(command.corpus), tokenizer, command.output_dir,
        max_block_length=command.max_block_length, max_title_length=command.max_title_length,
        source=command.corpus, overwrite=command.overwrite, show_progress=show_progress)
    summary = {key: store.manifest[key] for key in (
        "num_documents", "num_blocks", "num_sentences", "num_tokens", "num_split_sentences",
        "num_empty_documents", "fingerprint")}
    summary["mean_tokens_per_block"] = round(summary["num_tokens"] / max(1, len(store)), 1)
    summary["seconds"] = round(time.time() - started, 1)
    print(f"wrote {store.directory}: {json.dumps(summary)}")
  elif command.salient_spans:
    store = BlockStore(command.output_dir)
  else:
    raise InputError("--corpus is required (or --salient_spans, to annotate the store at "
                     "--output_dir)", field="corpus")
  if command.salient_spans:
    started = time.time()
    spans = salient_spans.annotate_store(store, batch_size=command.ner_batch_size,
                                         overwrite=command.overwrite, show_progress=show_progress)
    print(f"wrote {spans.manifest['num_spans']} salient spans of {len(store)} blocks to "
          f"{store.directory}/{salient_spans.DIRECTORY} in {time.time() - started:.1f}s: "
          f"{json.dumps(spans.manifest['spans_per_label'])}")


if __name__ == "__main__":
  cli.run(main, SETTINGS)

"""Builds a block store from raw documents.

    python -m orqa_realm.preprocess --corpus=squad:demo_data/squad/dev-v1.1.public36.json.gz \\
        --tokenizer=minilm --output_dir=/tmp/squad_blocks

or with a flagfile: `python -m orqa_realm.preprocess --flagfile=configs/preprocess_squad_demo.cfg`.
With --salient_spans it also finds the store's salient spans (REALM; needs the `ner` extra); without
--corpus it only adds them to the existing store at --output_dir.
"""

from __future__ import annotations

import json
import sys
import time

from absl import app, flags

from orqa_realm.data import salient_spans
from orqa_realm.data.blocks import BlockStore, build_block_store
from orqa_realm.data.documents import CORPUS_READERS, load_documents
from orqa_realm.data.tokenization import Tokenizer
from orqa_realm.core.errors import InputError
from orqa_realm.modeling.pretrained import resolve_model_dir

_CORPUS = flags.DEFINE_string(
    "corpus", None, f"Documents as FORMAT:PATH, FORMAT one of {sorted(CORPUS_READERS)}.")
_TOKENIZER = flags.DEFINE_string(
    "tokenizer", "minilm", "A Hugging Face model directory with vocab.txt or tokenizer.json, or "
    "the name of a packaged model ('minilm').")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where to write the block store.")
_MAX_BLOCK_LENGTH = flags.DEFINE_integer(
    "max_block_length", 288, "Wordpieces per encoded block, [CLS] title [SEP] text [SEP] included.")
_MAX_TITLE_LENGTH = flags.DEFINE_integer(
    "max_title_length", 32, "Titles are cut to this many wordpieces.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace an existing store (or its salient spans) at --output_dir.")
_SALIENT_SPANS = flags.DEFINE_bool(
    "salient_spans", False, "Also find the named entities and dates of every block (REALM's "
    "salient spans) with spaCy and write them beside the store; without --corpus, annotate the "
    "existing store at --output_dir.")
_NER_BATCH_SIZE = flags.DEFINE_integer("ner_batch_size", 256, "Blocks per spaCy batch.")

flags.mark_flags_as_required(["output_dir"])


def main(argv):
  del argv
  started = time.time()
  show_progress = sys.stderr.isatty()
  try:
    if _CORPUS.value:
      tokenizer = Tokenizer(resolve_model_dir(_TOKENIZER.value))
      store = build_block_store(
          load_documents(_CORPUS.value), tokenizer, _OUTPUT_DIR.value,
          max_block_length=_MAX_BLOCK_LENGTH.value, max_title_length=_MAX_TITLE_LENGTH.value,
          source=_CORPUS.value, overwrite=_OVERWRITE.value, show_progress=show_progress)
      summary = {key: store.manifest[key] for key in (
          "num_documents", "num_blocks", "num_sentences", "num_tokens", "num_split_sentences",
          "num_empty_documents", "fingerprint")}
      summary["mean_tokens_per_block"] = round(summary["num_tokens"] / max(1, len(store)), 1)
      summary["seconds"] = round(time.time() - started, 1)
      print(f"wrote {store.directory}: {json.dumps(summary)}")
    elif _SALIENT_SPANS.value:
      store = BlockStore(_OUTPUT_DIR.value)
    else:
      raise InputError("--corpus is required (or --salient_spans, to annotate the store at "
                       "--output_dir)")
    if _SALIENT_SPANS.value:
      started = time.time()
      spans = salient_spans.annotate_store(
          store, batch_size=_NER_BATCH_SIZE.value, overwrite=_OVERWRITE.value,
          show_progress=show_progress)
      print(f"wrote {spans.manifest['num_spans']} salient spans of {len(store)} blocks to "
            f"{store.directory}/{salient_spans.DIRECTORY} in {time.time() - started:.1f}s: "
            f"{json.dumps(spans.manifest['spans_per_label'])}")
  except InputError as e:
    # A located, readable message rather than a traceback: the user's input is what is wrong.
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)

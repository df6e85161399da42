"""The open-domain QA pipeline of a SQuAD file: its paragraphs become the corpus and its questions,
split by article, the training and held-out questions.

    blocks     preprocess    the block store                        WORKDIR/blocks
    qa         split_squad   train.json / test.json                 WORKDIR/qa
    retriever  train         retriever pretraining (ICT by default) WORKDIR/retriever
    index      embed         the retriever's index of the blocks    WORKDIR/index
    reader     train         ORQA: question encoder + span reader   WORKDIR/reader
    evaluate   evaluate      dense retrieval + reader, held out     WORKDIR/eval
    bm25       evaluate      BM25 retrieval + the same reader       WORKDIR/eval_bm25

Each training or embedding stage takes its settings from a config (a flagfile of that command,
e.g. configs/ict_squad_minilm.cfg); the pipeline adds the paths that tie the stages together
(given last, they replace the config's), `--bert`, and with `--size=tiny` a few short-run
settings (TINY_FLAGS).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Literal

import orqa_realm
from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.serving.system import (PIPELINE_BLOCKS, PIPELINE_INDEX, PIPELINE_READER,
                                       PIPELINE_RETRIEVER)
from orqa_realm.workflow.summary import PairedTest
from orqa_realm.workflow.stages import (Stage, block_store_output, files_output, index_output,
                                        training_output)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(orqa_realm.__file__)))
EVALUATIONS = ("evaluate", "bm25")  # the stages whose metrics.json the summary reports

# --size=tiny: a first look in minutes on a 2-core CPU (a few training steps, short blocks and
# reader inputs, few held-out questions): it shows the pipeline working, not a trained system.
TINY_FLAGS: dict[str, tuple[str, ...]] = {
    "retriever": ("--num_train_steps=8", "--batch_size=16", "--warmup_steps=1",
                  "--log_every_steps=2", "--eval_every_steps=0", "--checkpoint_every_steps=8",
                  "--ict_eval_batches=1"),
    "index": ("--block_length=128",),
    "reader": ("--num_train_steps=8", "--warmup_steps=1", "--log_every_steps=2",
               "--eval_every_steps=0", "--checkpoint_every_steps=8", "--eval_questions=16",
               "--reader_length=192"),
}
TINY_EVAL_QUESTIONS = 60


def paired_test(settings: OpenQAPipeline) -> PairedTest:
  """The dense system against BM25 with the same reader, question by question: answer recall
  at the smallest cut-off and the reader's exact match."""
  return PairedTest(baselines=("bm25",), metrics=(
      f"answer_recall@{min(settings.eval_recall_ks)}", "exact_match"))


@dataclasses.dataclass(frozen=True)
class OpenQAPipeline:
  """The pipeline's settings: where it writes, what it reads, each stage's config."""
  workdir: str = setting(
      "", "Where every stage writes (blocks/, qa/, retriever/, index/, reader/, eval/, "
      "eval_bm25/), the stage records (pipeline/) and summary.json. A local directory.")
  squad: str = setting(
      "demo_data/squad/dev-v1.1.public36.json.gz",
      "SQuAD v1.1 file (optionally .gz): its paragraphs are the corpus, its questions are split "
      "by article into training and held-out questions.")
  test_fraction: float = setting(0.5, "Fraction of the articles whose questions are held out.")
  split_seed: int = setting(0, "Seeds which articles are held out.")
  bert: str = setting(
      "minilm", "The BERT every model starts from and whose tokenizer reads everything: a Hugging "
      "Face directory or a packaged model ('minilm').")
  size: Literal["full", "tiny"] = setting(
      "full", "full: the configs as written; tiny: a few steps of each, for a first look.")
  preprocess_config: str = setting(
      "configs/preprocess_squad_demo.cfg", "Flagfile of `preprocess`: block lengths.")
  retriever_config: str = setting(
      "configs/ict_squad_minilm.cfg", "Flagfile of `train` for the retriever (any retriever "
      "task that needs no other run: ict, dpr with its --train_qa_dataset).")
  index_config: str = setting(
      "configs/embed_squad_minilm.cfg", "Flagfile of `embed`: block length, dtype, backend.")
  reader_config: str = setting(
      "configs/orqa_squad_demo.cfg", "Flagfile of `train` for ORQA (--task=orqa).")
  eval_questions: int = setting(
      200, "Held-out questions evaluated, every n-th from the first; 0: all. (--size=tiny: "
      f"{TINY_EVAL_QUESTIONS}.)")
  eval_recall_ks: tuple[int, ...] = setting((1, 5, 20, 100), "Cut-offs of recall@k.")
  bm25_baseline: bool = setting(
      True, "Also evaluate BM25 retrieval (with the same reader) on the same questions.")


def bundled_path(path: str, field: str) -> str:
  """`path` as given when it exists, else the repository's file of that name (configs/ and
  demo_data/ ship with the repository, not the installed package)."""
  for candidate in (path, os.path.join(REPO_ROOT, path)):
    if os.path.exists(candidate):
      return os.path.abspath(candidate)
  raise InputError("no such file (nor in the repository)", path=path, field=field)


def open_qa_stages(settings: OpenQAPipeline) -> list[Stage]:
  """The stages of the pipeline, in order."""
  if not settings.workdir:
    raise InputError("--workdir is required", field="workdir")
  out = lambda name: os.path.join(os.path.abspath(settings.workdir), name)
  # Where `ask` and `serve` look for them in a pipeline's workdir.
  blocks, retriever, index, reader = map(out, (PIPELINE_BLOCKS, PIPELINE_RETRIEVER,
                                               PIPELINE_INDEX, PIPELINE_READER))
  qa = out("qa")
  squad = bundled_path(settings.squad, "squad")
  config = lambda field: f"--flagfile={bundled_path(getattr(settings, field), field)}"
  tiny = lambda stage: TINY_FLAGS.get(stage, ()) if settings.size == "tiny" else ()
  bert = f"--bert={settings.bert}"
  eval_questions = TINY_EVAL_QUESTIONS if settings.size == "tiny" else settings.eval_questions
  evaluation = (f"--block_store={blocks}", bert, f"--reader_workdir={reader}",
                f"--eval_qa_dataset=squad:{qa}/test.json", f"--eval_questions={eval_questions}",
                "--eval_recall_ks=" + ",".join(map(str, settings.eval_recall_ks)))
  stages = [
      Stage("blocks", "block store of the SQuAD paragraphs", "preprocess",
            (config("preprocess_config"), f"--corpus=squad:{squad}",
             f"--tokenizer={settings.bert}", f"--output_dir={blocks}", "--overwrite"),
            blocks, block_store_output, input_files=(squad,)),
      Stage("qa", "training and held-out questions, split by article", "split_squad",
            (f"--squad={squad}", f"--test_fraction={settings.test_fraction}",
             f"--split_seed={settings.split_seed}", f"--output_dir={qa}"),
            qa, files_output("train.json", "test.json"), input_files=(squad,)),
      Stage("retriever", "retriever pretraining", "train",
            (config("retriever_config"), *tiny("retriever"), f"--workdir={retriever}",
             f"--block_store={blocks}", bert),
            retriever, training_output, after=("blocks",)),
      Stage("index", "the retriever's index of the blocks", "embed",
            (config("index_config"), *tiny("index"), f"--workdir={retriever}",
             f"--block_store={blocks}", bert, f"--index_dir={index}"),
            index, index_output("retriever", "blocks"), after=("blocks", "retriever")),
      Stage("reader", "ORQA: question encoder and span reader over the index", "train",
            (config("reader_config"), *tiny("reader"), f"--workdir={reader}",
             f"--block_store={blocks}", bert, f"--retriever_workdir={retriever}",
             f"--index_dir={index}", f"--train_qa_dataset=squad:{qa}/train.json",
             f"--eval_qa_dataset=squad:{qa}/test.json"),
            reader, training_output, after=("blocks", "qa", "retriever", "index")),
      Stage("evaluate", "held-out questions: dense retrieval and the reader", "evaluate",
            (*evaluation, f"--workdir={reader}", f"--index_dir={index}",
             f"--output_dir={out('eval')}"),
            out("eval"), files_output("metrics.json"),
            after=("blocks", "qa", "index", "reader")),
  ]
  if settings.bm25_baseline:
    stages.append(Stage(
        "bm25", "held-out questions: BM25 retrieval and the same reader", "evaluate",
        (*evaluation, "--retrieval=bm25", f"--output_dir={out('eval_bm25')}"),
        out("eval_bm25"), files_output("metrics.json"), after=("blocks", "qa", "reader")))
  return stages

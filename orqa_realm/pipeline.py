"""The whole open-domain QA pipeline of a SQuAD file in one command:

    python -m orqa_realm.pipeline --flagfile=configs/squad_pipeline.cfg [--size=tiny]

runs preprocess -> split -> retriever pretraining -> index -> ORQA -> evaluation (dense, and BM25
as the baseline) under one --workdir (`orqa_realm/workflow/open_qa.py` lists the stages). Each
stage is the command it names, run as a subprocess with the stage's config; a stage whose record
says it completed with the same settings and inputs, and whose output is still what it wrote, is
skipped; a killed pipeline, run again, resumes the stage it was in. The end is a table of the
held-out metrics and the time of each stage, with the dense system's difference from BM25's
tested question by question, also written to WORKDIR/summary.json.
"""

from __future__ import annotations

import os

from orqa_realm import cli
from orqa_realm.core import config as settings_lib
from orqa_realm.workflow import open_qa, summary

SETTINGS = settings_lib.FlagBinder("pipeline")
SETTINGS.bind("pipeline", open_qa.OpenQAPipeline)


def main() -> None:
  settings = SETTINGS.build("pipeline")
  stages = open_qa.open_qa_stages(settings)
  summary.run_and_summarize(os.path.abspath(settings.workdir), stages, open_qa.EVALUATIONS,
                            paired_test=open_qa.paired_test(settings))


if __name__ == "__main__":
  cli.run(main, SETTINGS)

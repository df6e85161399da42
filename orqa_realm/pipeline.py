"""The whole open-domain QA pipeline of a SQuAD file in one command:

    python -m orqa_realm.pipeline --flagfile=configs/squad_pipeline.cfg [--size=tiny]

runs preprocess -> split -> retriever pretraining -> index -> ORQA -> evaluation (dense, and BM25
as the baseline) under one --workdir (`orqa_realm/workflow/open_qa.py` lists the stages). Each
stage is the command it names, run as a subprocess with the stage's config; a stage whose record
says it completed with the same settings and inputs, and whose output is still what it wrote, is
skipped; a killed pipeline, run again, resumes the stage it was in. The end is a table of the
held-out metrics and the time of each stage, also written to WORKDIR/summary.json.
"""

from __future__ import annotations

import os

from orqa_realm import cli
from orqa_realm.core import config as settings_lib
from orqa_realm.core.errors import InputError
from orqa_realm.workflow import open_qa, records, runner, summary

SETTINGS = settings_lib.FlagBinder("pipeline")
SETTINGS.bind("pipeline", open_qa.OpenQAPipeline)


def main() -> None:
  settings = SETTINGS.build("pipeline")
  stages = open_qa.open_qa_stages(settings)
  workdir = os.path.abspath(settings.workdir)
  try:
    results = runner.run_pipeline(workdir, stages)
  except runner.StageFailed as e:
    record = records.record_path(workdir, e.stage.name)
    raise InputError(f"stage {e.stage.name} failed (exit code {e.returncode}; its message is "
                     f"above); fix it and run the pipeline again: complete stages are skipped "
                     f"(its command line is in {record})") from e
  result = summary.summarize(results, open_qa.EVALUATIONS)
  path = summary.write_summary(workdir, result)
  print("\n" + summary.format_table(result) + f"\n\nwrote {path}", flush=True)


if __name__ == "__main__":
  cli.run(main, SETTINGS)

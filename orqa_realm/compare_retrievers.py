"""Dual-encoder training methods compared on the same data and steps, in one command:

    python -m orqa_realm.compare_retrievers --flagfile=configs/compare_squad.cfg

trains each method of --methods (DPR, DPR with RocketQA's denoised negatives, Margin-MSE,
listwise KL, TAS-B, RocketQAv2, STAR, ADORE) with the same training config, indexes each run and
evaluates it on the held-out questions, alone and fused with BM25
(`orqa_realm/workflow/retriever_comparison.py` lists the stages). As `pipeline`, each stage is
its command in a subprocess, complete stages are skipped and a killed comparison resumes; the end
is a table of every method's held-out recall, and of each one's difference from BM25's and
DPR's with its paired randomisation p-value, also written to WORKDIR/summary.json.
"""

from __future__ import annotations

import os
from typing import Any

from orqa_realm import cli
from orqa_realm.core import config as settings_lib
from orqa_realm.workflow import retriever_comparison, summary

SETTINGS = settings_lib.FlagBinder("compare_retrievers")
SETTINGS.bind("comparison", retriever_comparison.RetrieverComparison)


def method_label(name: str, metrics: dict[str, Any]) -> str:
  """eval_M -> M; hybrid_M -> M + BM25."""
  del metrics
  kind, method = name.split("_", 1)
  return f"{method} + BM25" if kind == "hybrid" else method


def main() -> None:
  comparison = SETTINGS.build("comparison")
  stages = retriever_comparison.comparison_stages(comparison)
  summary.run_and_summarize(os.path.abspath(comparison.workdir), stages,
                            retriever_comparison.evaluation_stages(comparison), method_label,
                            row_title="method",
                            paired_test=retriever_comparison.paired_test(comparison))


if __name__ == "__main__":
  cli.run(main, SETTINGS)

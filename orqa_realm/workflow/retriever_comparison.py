"""Dual-encoder training methods compared on the same data and steps: each method's run, its
index, and its held-out retrieval (alone, and fused with BM25).

    train_M     train      the method's run, from one shared training config    WORKDIR/runs/M
    index_M     embed      its index of the blocks                               WORKDIR/indexes/M
    eval_M      evaluate   dense retrieval of the held-out questions             WORKDIR/eval/M
    hybrid_M    evaluate   the same fused with BM25 (with --bm25_dir)            WORKDIR/hybrid/M
    eval_bm25   evaluate   BM25 alone on the same questions (with --bm25_dir)    WORKDIR/eval/bm25

Every method trains with `--train_config` (data, model, batch, steps, learning rate: DPR's
config) plus only the flags that make it that method (`METHODS`), so that the table compares
objectives, not budgets. The teacher of the distilling methods is one cross-encoder run
(`--teacher_workdir`), whose scores of each candidate list are cached under
WORKDIR/teacher_scores, shared by the methods that score the same pairs, in a file named by what
the scores depend on (the teacher's run description, the training config, the list): a changed
teacher or config scores into a new file rather than meeting a stale one. ADORE trains the
question tower of the DPR run over that run's frozen index (read at the index's block length),
so it runs after DPR and has no index of its own.

Every evaluation is then compared question by question with BM25's and with DPR's (where they
are in the comparison) on recall at the smallest cut-off (`paired_test`), so that a method's
difference from the baselines comes with how likely chance alone would give it.

Like the open-QA pipeline, a completed stage is skipped and a killed comparison, run again,
resumes the stage it was in: a comparison too long for one sitting is run in several.
"""

from __future__ import annotations

import dataclasses
import os

from orqa_realm.core import run_directory
from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.workflow import flagfiles, records, summary
from orqa_realm.workflow.open_qa import bundled_path
from orqa_realm.workflow.stages import Stage, files_output, index_output, training_output

# {teacher}: the cross-encoder run; {teacher_scores}: its cache for this method's candidate
# lists; {dpr_run}, {dpr_index}: the DPR method's run and index (ADORE starts from them).
METHODS: dict[str, tuple[str, ...]] = {
    "dpr": ("--task=dpr",),
    "dpr_denoised": ("--task=dpr", "--teacher_workdir={teacher}",
                     "--teacher_scores={teacher_scores}", "--denoise_margin={denoise_margin}"),
    "margin_mse": ("--task=distill", "--teacher_workdir={teacher}",
                   "--teacher_scores={teacher_scores}", "--distill_loss=margin_mse"),
    "listwise_kl": ("--task=distill", "--teacher_workdir={teacher}",
                    "--teacher_scores={teacher_scores}", "--distill_loss=listwise_kl"),
    # One negative a query per step, as DPR's, drawn from a mined pool of --tasb_pool.
    "tasb": ("--task=tasb", "--teacher_workdir={teacher}", "--teacher_scores={teacher_scores}",
             "--hard_negatives_per_question={tasb_pool}"),
    "rocketqav2": ("--task=rocketqav2", "--ranker_workdir={teacher}"),
    "star": ("--task=star",),
    "adore": ("--task=adore", "--retriever_workdir={dpr_run}", "--index_dir={dpr_index}"),
}
TEACHER_METHODS = ("dpr_denoised", "margin_mse", "listwise_kl", "tasb", "rocketqav2")
# Which methods score the same candidate lists with the teacher (one cache file each).
TEACHER_SCORE_LISTS = dict(dpr_denoised="denoise_pool", margin_mse="negatives",
                           listwise_kl="negatives", tasb="tasb_pool")


@dataclasses.dataclass(frozen=True)
class RetrieverComparison:
  """What is compared, on what, and where it is written."""
  workdir: str = setting(
      "", "Where every stage writes (runs/, indexes/, eval/, hybrid/, teacher_scores/), the "
      "stage records (pipeline/) and summary.json. A local directory.")
  methods: tuple[str, ...] = setting(
      tuple(METHODS), f"Methods compared, in this order; any of {', '.join(METHODS)} (adore "
      "after dpr, whose index it trains over).")
  train_config: str = setting(
      "configs/dpr_squad_demo.cfg", "Flagfile of `train` every method trains with (data, "
      "retriever, batch, steps, learning rate); each method adds only its own flags.")
  index_config: str = setting(
      "configs/embed_squad_minilm.cfg", "Flagfile of `embed` for every method's index.")
  block_store: str = setting("runs/blocks/squad_demo", "The blocks trained on and retrieved.")
  bert: str = setting("minilm", "The BERT every run starts from (and the tokenizer).")
  teacher_workdir: str = setting(
      "", "The cross-encoder run (--task=cross_encoder) the distilling methods learn from "
      f"({', '.join(TEACHER_METHODS)}); required when one of them is compared.")
  denoise_margin: float = setting(
      0.0, "dpr_denoised: drop a mined negative the teacher scores above (the positive - this).")
  tasb_pool: int = setting(7, "tasb: the mined negatives of a query its negative is drawn from.")
  eval_qa_dataset: str = setting("squad:runs/qa/squad_demo/test.json",
                                 "The held-out questions, FORMAT:PATH.")
  eval_questions: int = setting(
      0, "Most held-out questions evaluated, every n-th from the first; 0: all.")
  eval_recall_ks: tuple[int, ...] = setting((1, 5, 20), "Cut-offs of recall@k.")
  bm25_dir: str = setting(
      "", "A BM25 index of --block_store: each method is also evaluated fused with it "
      "(z-score, --hybrid_alpha); empty: dense only.")
  hybrid_alpha: float = setting(1.0, "Weight of BM25 in the fused evaluations.")


BM25_EVALUATION = "eval_bm25"


def evaluation_stages(comparison: RetrieverComparison) -> list[str]:
  """The names of the comparison's evaluation stages, in table order."""
  names = [f"eval_{method}" for method in comparison.methods]
  if comparison.bm25_dir:
    names += [BM25_EVALUATION] + [f"hybrid_{method}" for method in comparison.methods]
  return names


def paired_test(comparison: RetrieverComparison) -> summary.PairedTest:
  """Every evaluation against BM25's and DPR's (those of them compared), question by question,
  on answer and gold-paragraph recall at the smallest cut-off (the gold-paragraph one where the
  questions name their paragraphs)."""
  k = min(comparison.eval_recall_ks)
  return summary.PairedTest(baselines=(BM25_EVALUATION, "eval_dpr"),
                            metrics=(f"answer_recall@{k}", f"gold_paragraph_recall@{k}"))


def check_comparison(comparison: RetrieverComparison) -> None:
  """Refuses a comparison that cannot run, before any stage does (a missing teacher found after
  an hour of DPR training would waste it)."""
  methods = comparison.methods
  if not comparison.workdir:
    raise InputError("--workdir is required", field="workdir")
  if not methods:
    raise InputError("no methods to compare", field="methods")
  if unknown := sorted(set(methods) - set(METHODS)):
    raise InputError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}",
                     field="methods")
  if len(set(methods)) != len(methods):
    raise InputError("a method is named twice", field="methods")
  if "adore" in methods and ("dpr" not in methods or methods.index("dpr") > methods.index("adore")):
    raise InputError("adore trains over the dpr method's index: name dpr before it",
                     field="methods")
  if taught := sorted(set(methods) & set(TEACHER_METHODS)):
    if not comparison.teacher_workdir:
      raise InputError(f"{taught} learn from a cross-encoder: pass --teacher_workdir",
                       field="teacher_workdir")
    if not os.path.isfile(os.path.join(comparison.teacher_workdir, run_directory.RUN_FILE)):
      raise InputError("not a training run directory (no run.json)",
                       path=comparison.teacher_workdir, field="teacher_workdir")
  if not os.path.isfile(os.path.join(comparison.block_store, "manifest.json")):
    raise InputError("not a block store (no manifest.json)", path=comparison.block_store,
                     field="block_store")
  if comparison.bm25_dir and not os.path.isdir(comparison.bm25_dir):
    raise InputError("no such directory", path=comparison.bm25_dir, field="bm25_dir")


def flag_value(args: list[str], name: str) -> str | None:
  """The last value of --name in `args`, flagfiles inlined (as absl reads them); None if
  absent."""
  values = [arg.split("=", 1)[1] for arg in flagfiles.expand(args)
            if arg.startswith(f"--{name}=")]
  return values[-1] if values else None


def absolute_spec(spec: str) -> str:
  """FORMAT:PATH with PATH absolute (stage fingerprints then name the same file from anywhere)."""
  data_format, colon, path = spec.partition(":")
  return f"{data_format}:{os.path.abspath(path)}" if colon else spec


def comparison_stages(comparison: RetrieverComparison) -> list[Stage]:
  """The stages of the comparison, in order: each method's training, index and evaluation, then
  each method's fused evaluation."""
  check_comparison(comparison)
  out = lambda *parts: os.path.join(os.path.abspath(comparison.workdir), *parts)
  block_store = os.path.abspath(comparison.block_store)
  teacher = comparison.teacher_workdir and os.path.abspath(comparison.teacher_workdir)
  train_config = f"--flagfile={bundled_path(comparison.train_config, 'train_config')}"
  index_config = f"--flagfile={bundled_path(comparison.index_config, 'index_config')}"
  shared = (f"--block_store={block_store}", f"--bert={comparison.bert}")
  questions = (f"--eval_qa_dataset={absolute_spec(comparison.eval_qa_dataset)}",
               f"--eval_questions={comparison.eval_questions}",
               "--eval_recall_ks=" + ",".join(map(str, comparison.eval_recall_ks)))
  evaluation = (*shared, "--embed_dtype=float32", *questions)
  indexed_by = lambda method: "dpr" if method == "adore" else method  # whose index it searches
  run_of = lambda method: out("runs", method)
  index_of = lambda method: out("indexes", indexed_by(method))
  # What an evaluation of a method reads, and the stages that wrote it.
  searched = lambda method: (f"--workdir={run_of(method)}", f"--index_dir={index_of(method)}")
  searched_after = lambda method: (f"train_{method}", f"index_{indexed_by(method)}")
  stages = []
  # ADORE reads blocks as the index it trains over was embedded (a block length of the index
  # config, where it gives one, not the training config's).
  index_block_length = flag_value([index_config], "block_length")
  for method in comparison.methods:
    # A retrained teacher (its settings, steps) trains the method again.
    teacher_record = ((os.path.join(teacher, run_directory.RUN_FILE),)
                      if method in TEACHER_METHODS else ())
    score_list = TEACHER_SCORE_LISTS.get(method, method)
    cache_key = records.fingerprint(dict(
        list=score_list, teacher=[records.file_fingerprint(path) for path in teacher_record],
        train=flagfiles.expand([train_config]), shared=shared, pool=(
            comparison.tasb_pool if score_list == "tasb_pool" else None)))
    values = dict(teacher=teacher, denoise_margin=comparison.denoise_margin,
                  tasb_pool=comparison.tasb_pool, dpr_run=run_of("dpr"),
                  dpr_index=index_of("dpr"),
                  teacher_scores=out("teacher_scores", f"{score_list}-{cache_key}.npz"))
    method_flags = [flag.format(**values) for flag in METHODS[method]]
    if method == "adore" and index_block_length is not None:
      method_flags.append(f"--block_length={index_block_length}")
    stages.append(Stage(
        f"train_{method}", f"{method}: training", "train",
        (train_config, *method_flags, *shared, f"--workdir={run_of(method)}"),
        run_of(method), training_output,
        after=searched_after("dpr") if method == "adore" else (), input_files=teacher_record))
    if method != "adore":
      stages.append(Stage(
          f"index_{method}", f"{method}: index of the blocks", "embed",
          (index_config, *shared, f"--workdir={run_of(method)}",
           f"--index_dir={index_of(method)}"),
          index_of(method), index_output(f"train_{method}", store_dir=block_store),
          after=(f"train_{method}",)))
    stages.append(Stage(
        f"eval_{method}", f"{method}: dense retrieval of the held-out questions", "evaluate",
        (*evaluation, *searched(method), f"--output_dir={out('eval', method)}"),
        out("eval", method), files_output("metrics.json"), after=searched_after(method)))
  if comparison.bm25_dir:
    stages.append(Stage(
        BM25_EVALUATION, "BM25 retrieval of the held-out questions", "evaluate",
        (*shared, "--retrieval=bm25", f"--bm25_dir={os.path.abspath(comparison.bm25_dir)}",
         *questions, f"--output_dir={out('eval', 'bm25')}"),
        out("eval", "bm25"), files_output("metrics.json")))
    fusion = ("--retrieval=hybrid", "--hybrid_normalization=zscore",
              f"--hybrid_alpha={comparison.hybrid_alpha}",
              f"--bm25_dir={os.path.abspath(comparison.bm25_dir)}")
    stages += [Stage(f"hybrid_{method}", f"{method}: fused with BM25", "evaluate",
                     (*evaluation, *searched(method), *fusion,
                      f"--output_dir={out('hybrid', method)}"),
                     out("hybrid", method), files_output("metrics.json"),
                     after=searched_after(method))
               for method in comparison.methods]
  return stages

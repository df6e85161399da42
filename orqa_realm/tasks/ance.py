"""ANCE (Xiong et al. 2021): DPR whose hard negatives come from the asynchronously refreshed
index of the model being trained.

The positives are DPR's (`data/dpr.py`). At each step the loop hands the task the newest loaded
index version (the refresher re-embeds the corpus from new checkpoints while training goes on);
the step's questions are embedded with the current parameters and searched in it, and each
question's `--hard_negatives_per_question` negatives are drawn uniformly, seeded by (seed, step,
question), from its top `--ance_negative_depth` blocks that may be negatives (no answer, not of
the gold paragraph or a judged document; ANCE samples from the top 200). They are mixed with the
in-batch negatives as in DPR. Before step 0 the loop indexes the initial model (a warm start
from `--retriever_workdir`, a DPR or ICT run, or `--bert`), and it logs the version in use and
its staleness (steps since the checkpoint it was built from): the negatives' staleness.

A resumed run reads the same questions in the same order; its negatives come from whichever
index version is loaded then.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.dpr import DPRExample, NegativeRule, fill_negatives
from orqa_realm.tasks.base import Need, StepContext, TaskContext
from orqa_realm.tasks.common import rank_in_refreshed_index
from orqa_realm.tasks.dpr import DPRConfig, DPRInputs, DPRTask
from orqa_realm.tasks.teacher import TeacherSettings


@dataclasses.dataclass(frozen=True)
class ANCEConfig(DPRConfig):
  """DPR's settings, and how deep in the refreshed index negatives are drawn."""
  negative_depth: int = setting(
      200, "ANCE draws each question's hard negatives from its top N blocks in the refreshed "
      "index.", flag="ance_negative_depth")


def sample_negatives(example: DPRExample, ranking: np.ndarray, rule: NegativeRule, count: int,
                     rng: np.random.Generator) -> tuple[int, ...]:
  """`count` blocks drawn uniformly from the allowed blocks of `ranking` (in rank order), topped
  up at random from the store when too few are allowed."""
  allowed = [int(block) for block in ranking if rule.allows(example, int(block))]
  if len(allowed) >= count:
    return tuple(allowed[i] for i in np.sort(rng.choice(len(allowed), count, replace=False)))
  negatives, _ = fill_negatives(allowed, lambda block: rule.allows(example, block), count,
                                len(rule.documents), rng, skip=ranking)
  return negatives


class ANCETask(DPRTask):
  name = "ance"
  config_class = ANCEConfig
  needs = frozenset({Need.PARAMS, Need.INDEX})
  mines_negatives = False

  def __init__(self, config: ANCEConfig, context: TaskContext):
    if config.teacher != TeacherSettings():
      raise InputError("--task=ance mines its negatives from its own refreshed index: "
                       "--teacher_* and --denoise_* are not read", field="teacher_workdir")
    super().__init__(config, context)
    self.rule = NegativeRule(self.store)

  def train_batch(self, step: int, context: StepContext) -> DPRInputs:
    config = self.config
    indices, examples = self.step_examples(step, context.rows)
    queries = self.query_tokens(indices)
    rankings = rank_in_refreshed_index(context, queries, config.retriever, self.context.dtype,
                                       config.negative_depth)  # [rows, depth]
    examples = [example._replace(hard_negatives=sample_negatives(
        example, ranking, self.rule, config.hard_negatives_per_question,
        np.random.default_rng([self.context.seed, step, position])))
                for position, example, ranking in zip(
                    np.arange(self.context.batch_size)[context.rows], examples, rankings)]
    return self.inputs(queries, examples)

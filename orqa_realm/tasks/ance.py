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
from absl import flags

from orqa_realm import embed
from orqa_realm.core import parallel
from orqa_realm.data.dpr import DPRExample, NegativeRule, fill_negatives
from orqa_realm.data.qa import question_indices
from orqa_realm.index.handle import LoadedIndex
from orqa_realm.tasks import retriever_flags
from orqa_realm.tasks.dpr import DPRConfig, DPRInputs, DPRTask, config_from_flags

_NEGATIVE_DEPTH = flags.DEFINE_integer(
    "ance_negative_depth", 200, "ANCE draws each question's hard negatives from its top N "
    "blocks in the refreshed index.")


@dataclasses.dataclass(frozen=True)
class ANCEConfig(DPRConfig):
  negative_depth: int = 200  # negatives are drawn from this many of the index's best blocks


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
  needs_index = True
  bm25_negatives = False

  def __init__(self, config: ANCEConfig, bert_params=None):
    super().__init__(config, bert_params)
    self.rule = NegativeRule(self.store)

  @classmethod
  def from_flags(cls, *, batch_size: int, seed: int, dtype, remat: bool) -> ANCETask:
    dpr = config_from_flags(batch_size=batch_size, seed=seed, dtype=dtype, remat=remat)
    config = ANCEConfig(**{field.name: getattr(dpr, field.name)
                           for field in dataclasses.fields(dpr)},
                        negative_depth=_NEGATIVE_DEPTH.value)
    return cls(config, None if config.retriever_workdir
               else retriever_flags.pretrained_bert_params())

  def train_batch(self, step: int, params=None, mesh=None,
                  index: LoadedIndex | None = None) -> DPRInputs:
    if params is None or index is None:
      raise ValueError("ANCE mines negatives with the current params from the refreshed index: "
                       "pass both")
    mesh = mesh if mesh is not None else parallel.make_mesh()
    config = self.config
    rows = question_indices(len(self.examples), config.batch_size, seed=config.seed, step=step)
    examples = [self.examples[row] for row in rows]
    queries = self.tokenizer.pack([self.question_ids[row] for row in rows],
                                  max_length=config.query_length)
    query_embeddings = embed.embed_query_tokens(params, queries, config.retriever,
                                                dtype=config.dtype, mesh=mesh)  # [batch, dim]
    depth = min(config.negative_depth, index.searcher.num_rows)
    rankings = index.searcher.search(query_embeddings, depth).ids  # [batch, depth]
    examples = [example._replace(hard_negatives=sample_negatives(
        example, ranking, self.rule, config.hard_negatives_per_question,
        np.random.default_rng([config.seed, step, position])))
                for position, (example, ranking) in enumerate(zip(examples, rankings))]
    return self.inputs(rows, examples)

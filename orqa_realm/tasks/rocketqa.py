"""RocketQAv2's dynamic listwise distillation (Ren et al. 2021): the dual encoder and a
cross-encoder ranker trained jointly on each query's candidate list.

    python -m orqa_realm.train --task=rocketqav2 --ranker_workdir=runs/cross_encoder_squad ...

Each step takes DPR's batch (each query's positive and `--hard_negatives_per_question` mined
negatives) and scores every candidate twice: the retriever's scaled q . d and the ranker's
cross-encoder score. The loss is KL(retriever softmax || ranker softmax) over each query's list,
which moves both models towards each other (the ranker is not frozen: it adapts to what the
retriever finds hard), plus the ranker's own supervised listwise loss (the positive's softmax
cross-entropy), which keeps it anchored to the labels.

The retriever starts from --bert or --retriever_workdir; the ranker from a cross-encoder run
(`--ranker_workdir`, RocketQAv2 starts from a trained one). The run's parameters hold the
retriever's towers at the top level, as every retriever run's (so `embed`, `evaluate` and the
refresher use it as a dual encoder), and the ranker under "ranker" (so `evaluate
--rerank_workdir` can rerank with it).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from orqa_realm.core import run_directory
from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.pair_inputs import pair_inputs
from orqa_realm.data.reader_inputs import LENGTH_MULTIPLE
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.encode import runs
from orqa_realm.modeling import cross_encoder
from orqa_realm.modeling.cross_encoder import JOINT_RANKER as RANKER
from orqa_realm.modeling.cross_encoder import CrossEncoder
from orqa_realm.modeling.losses import listwise_softmax_loss
from orqa_realm.modeling.ranking_losses import listwise_kl
from orqa_realm.tasks.base import StepContext, TaskContext
from orqa_realm.tasks.common import batch_length_multiple
from orqa_realm.tasks.distill import student_scores
from orqa_realm.tasks.dpr import DPRConfig, DPRTask


class JointInputs(NamedTuple):
  queries: TokenBatch  # [batch, query_length]
  blocks: TokenBatch  # [batch x (1 + negatives), block_length]: per query, positive, negatives
  block_ids: np.ndarray  # [batch x (1 + negatives)] int32
  pairs: TokenBatch  # [batch, 1 + negatives, pair length]: the ranker's inputs, same order


@dataclasses.dataclass(frozen=True)
class RocketQAv2Config(DPRConfig):
  """DPR's settings, the ranker the joint training starts from, and the loss weights."""
  hard_negatives_per_question: int = setting(
      7, "Mined negatives per query: its list has 1 + n candidates.")
  ranker_workdir: str = setting(
      "", "The cross-encoder run (--task=cross_encoder) the ranker starts from.")
  ranker_loss_weight: float = setting(
      1.0, "Weight of the ranker's supervised listwise loss added to the KL.")


def joint_model(retriever_model: dict[str, Any], ranker: cross_encoder.CrossEncoderConfig
                ) -> dict[str, Any]:
  """A joint run's model description: the retriever's, and its ranker."""
  return dict(retriever_model, **{RANKER: ranker.to_dict()})


class RocketQAv2Task(DPRTask):
  name = "rocketqav2"
  config_class = RocketQAv2Config

  def __init__(self, config: RocketQAv2Config, context: TaskContext):
    if not config.ranker_workdir:
      raise InputError("--task=rocketqav2 trains a ranker with the retriever: pass "
                       "--ranker_workdir (a cross-encoder run)", field="ranker_workdir")
    description = run_directory.read_run(config.ranker_workdir)
    key = next((key for key in (cross_encoder.CROSS_ENCODER, RANKER)
                if key in description.model), None)
    if key is None:
      raise InputError(f"the run (task {description.task!r}) holds no cross-encoder",
                       path=config.ranker_workdir, field="ranker_workdir")
    super().__init__(config, context)
    self.ranker_config = cross_encoder.CrossEncoderConfig.from_dict(description.model[key])
    if description.model["tokenizer_fingerprint"] != self.tokenizer.fingerprint:
      raise InputError("the ranker was trained with another tokenizer than --bert's",
                       path=config.ranker_workdir, field="ranker_workdir")
    self.ranker = CrossEncoder(self.ranker_config, jnp.dtype(context.dtype), context.remat)

  def run_model(self) -> dict[str, Any]:
    return joint_model(super().run_model(), self.ranker_config)

  def init_params(self, rng: jax.Array) -> Any:
    retriever_rng, ranker_rng = jax.random.split(rng)
    return dict(super().init_params(retriever_rng),
                **{RANKER: cross_encoder.init_params(self.ranker_config, ranker_rng)})

  def warm_start(self, params: Any, mesh) -> Any:
    """The retriever's start (DPR's), and the ranker from --ranker_workdir's newest
    checkpoint."""
    retriever_params = {name: value for name, value in params.items() if name != RANKER}
    ranker = runs.restore_cross_encoder_run(self.config.ranker_workdir, None, mesh)
    return dict(super().warm_start(retriever_params, mesh), **{RANKER: ranker.params})

  def train_batch(self, step: int, context: StepContext) -> JointInputs:
    indices, examples = self.step_examples(step, context.rows)
    inputs = self.inputs(self.query_tokens(indices), examples)
    config = self.ranker_config
    pairs = pair_inputs(self.store, [self.question_ids[i] for i in indices],
                        inputs.block_ids.reshape(len(examples), -1),
                        max_length=config.max_length, query_length=config.query_length,
                        length_multiple=batch_length_multiple(LENGTH_MULTIPLE,
                                                              config.max_length))
    return JointInputs(*inputs, pairs=pairs)

  def loss(self, params, batch: JointInputs, rng, deterministic: bool):
    retriever_rng, ranker_rng = jax.random.split(rng)
    retriever_params = {name: value for name, value in params.items() if name != RANKER}
    query_embeddings, block_embeddings = self.embed(retriever_params, batch.queries,
                                                    batch.blocks, retriever_rng, deterministic)
    retriever_scores = student_scores(query_embeddings, block_embeddings,
                                      self.config.retriever.score_scale)  # [batch, 1 + n]
    ranker_scores = self.ranker.apply({"params": params[RANKER]}, batch.pairs, deterministic,
                                      rngs={"dropout": ranker_rng})  # [batch, 1 + n]
    # KL(retriever || ranker): `listwise_kl(student, teacher)` is KL(teacher || student), and
    # neither side is held fixed.
    kl = listwise_kl(ranker_scores, retriever_scores)
    supervised = listwise_softmax_loss(ranker_scores)
    loss = kl + self.config.ranker_loss_weight * supervised.loss
    return loss, {"loss": loss, "listwise_kl": kl, "ranker_loss": supervised.loss,
                  "ranker_accuracy": supervised.accuracy,
                  "accuracy": jnp.mean(jnp.argmax(retriever_scores, -1) == 0)}

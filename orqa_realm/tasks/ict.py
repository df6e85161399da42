"""The Inverse Cloze Task (ORQA): pretrain the retriever to find a sentence's own block.

Loss: softmax over the global batch of blocks, each query's positive being its own block. Blocks
held out of training (`heldout_fraction`) give the evaluation batches. Optionally each evaluation
also reports answer recall@k on a QA set over the whole block store, every block embedded by the
current model (exact search): whether pretraining is helping retrieval.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.ict import ICTSampler
from orqa_realm.data.qa import every_nth, load_qa_dataset
from orqa_realm.data.tokenization import TokenBatch, Tokenizer
from orqa_realm.modeling.losses import in_batch_softmax_loss
from orqa_realm.modeling import retriever
from orqa_realm.modeling.pretrained import resolve_model_dir
from orqa_realm.tasks import retriever_flags
from orqa_realm.tasks.base import Task
from orqa_realm.tasks.retrieval_eval import StoreRecallEvaluation

_REMOVE_PROB = flags.DEFINE_float(
    "ict_remove_prob", 0.9, "Probability that the query sentence is removed from its block.")
_HELDOUT_FRACTION = flags.DEFINE_float(
    "ict_heldout_fraction", 0.05, "Fraction of blocks held out of ICT training for evaluation.")
_EVAL_BATCHES = flags.DEFINE_integer(
    "ict_eval_batches", 4, "Held-out batches (of the training batch size) per evaluation.")
_EVAL_QA_DATASET = flags.DEFINE_string(
    "ict_eval_qa_dataset", "", "QA set (FORMAT:PATH, as --qa_dataset) whose answer recall@k over "
    "the whole block store is reported at each evaluation, every block embedded by the current "
    "model; empty: none. Costs one embedding of the store per evaluation.")
_EVAL_QA_QUESTIONS = flags.DEFINE_integer(
    "ict_eval_qa_questions", 300, "Most questions of --ict_eval_qa_dataset evaluated (every n-th).")
_EVAL_RECALL_KS = flags.DEFINE_list(
    "ict_eval_recall_ks", ["1", "5", "20"], "Cut-offs of the answer recall@k evaluation.")


class ICTInputs(NamedTuple):
  queries: TokenBatch  # [batch, query_length]
  blocks: TokenBatch  # [batch, block_length]


@dataclasses.dataclass(frozen=True)
class ICTConfig:
  block_store: str
  retriever: retriever.RetrieverConfig
  bert_dir: str  # the tokenizer (and, unless from scratch, the weights) of the model
  batch_size: int
  seed: int = 0
  query_length: int = 64
  block_length: int = 288
  remove_prob: float = 0.9
  heldout_fraction: float = 0.05
  eval_batches: int = 4
  eval_qa_dataset: str = ""  # FORMAT:PATH; empty: no recall@k evaluation
  eval_qa_questions: int = 300
  eval_recall_ks: tuple[int, ...] = (1, 5, 20)
  score_scale: float = 1.0  # multiplies q . block in the loss
  dtype: Any = jnp.float32
  remat: bool = False


def split_blocks(num_blocks: int, heldout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(training blocks, held-out blocks), a seeded random split."""
  order = np.random.default_rng([seed, 1 << 20]).permutation(num_blocks)
  num_heldout = int(round(num_blocks * heldout_fraction))
  return np.sort(order[num_heldout:]), np.sort(order[:num_heldout])


class ICTTask(StoreRecallEvaluation, Task):
  name = "ict"

  def __init__(self, config: ICTConfig, bert_params: Any = None):
    self.config = config
    self.store = BlockStore(config.block_store)
    self.tokenizer = Tokenizer(config.bert_dir)
    self.store.check_tokenizer(self.tokenizer)
    self.model = retriever.DualEncoder(config.retriever, config.dtype, config.remat)
    self._bert_params = bert_params
    train_blocks, self.heldout_blocks = split_blocks(len(self.store), config.heldout_fraction,
                                                     config.seed)
    sampler = lambda blocks, seed: ICTSampler(
        self.store, batch_size=config.batch_size, query_length=config.query_length,
        block_length=config.block_length, remove_prob=config.remove_prob, seed=seed,
        candidate_blocks=blocks, block_format=config.retriever.block_format)
    self.train_sampler = sampler(train_blocks, config.seed)
    self.eval_sampler = (sampler(self.heldout_blocks, config.seed + 1)
                         if config.eval_batches and len(self.heldout_blocks) else None)
    self.eval_examples = (every_nth(load_qa_dataset(config.eval_qa_dataset),
                                    config.eval_qa_questions) if config.eval_qa_dataset else [])

  @classmethod
  def from_flags(cls, *, batch_size: int, seed: int, dtype, remat: bool) -> ICTTask:
    config = ICTConfig(
        block_store=retriever_flags.BLOCK_STORE.value, retriever=retriever_flags.retriever_config(),
        bert_dir=resolve_model_dir(retriever_flags.BERT.value), batch_size=batch_size, seed=seed,
        query_length=retriever_flags.QUERY_LENGTH.value,
        block_length=retriever_flags.BLOCK_LENGTH.value, remove_prob=_REMOVE_PROB.value,
        heldout_fraction=_HELDOUT_FRACTION.value, eval_batches=_EVAL_BATCHES.value,
        eval_qa_dataset=_EVAL_QA_DATASET.value, eval_qa_questions=_EVAL_QA_QUESTIONS.value,
        eval_recall_ks=tuple(sorted(int(k) for k in _EVAL_RECALL_KS.value)),
        score_scale=retriever_flags.RETRIEVAL_SCORE_SCALE.value, dtype=dtype,
        remat=remat)
    return cls(config, retriever_flags.pretrained_bert_params())

  def model_config(self) -> dict[str, Any]:
    return dict(task=self.name, **self.config.retriever.to_dict())

  def init_params(self, rng: jax.Array) -> Any:
    return retriever.init_params(self.config.retriever, rng, self._bert_params)

  def train_batch(self, step: int, params=None, mesh=None, index=None) -> ICTInputs:
    del params, mesh, index  # ICT batches depend on the step only
    batch = self.train_sampler.batch(step)
    return ICTInputs(batch.queries, batch.blocks)

  def loss(self, params, batch: ICTInputs, rng, deterministic: bool):
    query_embeddings, block_embeddings = self.model.apply(
        {"params": params}, batch.queries, batch.blocks, deterministic, rngs={"dropout": rng})
    result = in_batch_softmax_loss(query_embeddings, block_embeddings, self.config.score_scale)
    return result.loss, {"loss": result.loss, "accuracy": result.accuracy}

  def eval_batches(self) -> Iterator[ICTInputs]:
    if self.eval_sampler is None:
      return
    for step in range(self.config.eval_batches):
      batch = self.eval_sampler.batch(step)
      yield ICTInputs(batch.queries, batch.blocks)

"""DPR (Karpukhin et al. 2020): supervised dual-encoder training with in-batch and BM25 hard
negatives.

Each step takes `batch_size` (question, positive block) examples (seeded epochs of
permutations). The blocks of the step are every example's positive followed by every example's
`hard_negatives_per_question` BM25 negatives (see `data/dpr.py`), and each question's softmax
runs over all of them: the other questions' positives are its in-batch negatives. A block that
is the question's own positive under another row (two questions on one paragraph) is left out
of its softmax. Both towers are trained.

Training pairs come from a QA set (`--train_qa_dataset`) or from BEIR queries and qrels
(`--train_beir_queries`, `--train_beir_qrels`). The retriever starts from --bert's weights or
from another run (`--retriever_workdir`, e.g. ICT).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging

from orqa_realm import embed
from orqa_realm.core import parallel
from orqa_realm.data import beir
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.dpr import DPRExample, DPRExamples, beir_examples, qa_examples
from orqa_realm.data.qa import every_nth, load_qa_dataset, question_indices
from orqa_realm.data.tokenization import TokenBatch, Tokenizer
from orqa_realm.core.errors import InputError
from orqa_realm.index import bm25, index_flags
from orqa_realm.modeling.losses import in_batch_softmax_loss
from orqa_realm.modeling import retriever
from orqa_realm.tasks import retriever_flags
from orqa_realm.tasks.base import Task
from orqa_realm.tasks.retrieval_eval import StoreRecallEvaluation

_HARD_NEGATIVES = flags.DEFINE_integer(
    "hard_negatives_per_question", 1, "BM25 hard negatives per question (DPR: 1), besides the "
    "in-batch negatives.")
_HARD_NEGATIVE_DEPTH = flags.DEFINE_integer(
    "hard_negative_depth", 100, "BM25 blocks per question searched for its positive and hard "
    "negatives.")
_TRAIN_BEIR_QUERIES = flags.DEFINE_string(
    "train_beir_queries", "", "BEIR training queries (id<TAB>text), with --train_beir_qrels, "
    "instead of --train_qa_dataset.")
_TRAIN_BEIR_QRELS = flags.DEFINE_string(
    "train_beir_qrels", "", "Relevance judgements of --train_beir_queries (positives; judged "
    "documents are never negatives).")


class DPRInputs(NamedTuple):
  queries: TokenBatch  # [batch, query_length]
  blocks: TokenBatch  # [batch x (1 + hard negatives), block_length]: positives, then negatives
  block_ids: np.ndarray  # [batch x (1 + hard negatives)] int32 store index of each block row


@dataclasses.dataclass(frozen=True)
class DPRConfig:
  block_store: str
  retriever: retriever.RetrieverConfig
  bert_dir: str  # the tokenizer (and, unless from scratch or a run, the weights)
  batch_size: int
  train_qa_dataset: str = ""  # FORMAT:PATH, or
  train_beir_queries: str = ""  # BEIR queries and qrels
  train_beir_qrels: str = ""
  retriever_workdir: str = ""  # a run whose latest retriever checkpoint initialises the model
  hard_negatives_per_question: int = 1
  hard_negative_depth: int = 100
  bm25: bm25.BM25Settings = bm25.BM25Settings()
  bm25_dir: str | None = None
  seed: int = 0
  query_length: int = 64
  block_length: int = 288
  score_scale: float = 1.0  # multiplies q . block in the loss
  eval_qa_dataset: str = ""
  eval_questions: int = 0
  eval_recall_ks: tuple[int, ...] = (1, 5, 20)
  dtype: Any = jnp.float32
  remat: bool = False


def config_from_flags(*, batch_size: int, seed: int, dtype, remat: bool) -> DPRConfig:
  """The DPR configuration the flags describe (ANCE's too). A run's retriever
  (--retriever_workdir) keeps its own architecture; otherwise the flags describe it."""
  if not retriever_flags.BLOCK_STORE.value:
    raise InputError("--task=dpr and --task=ance need --block_store")
  retriever_config, bert_dir = retriever_flags.retriever_config_and_bert_dir()
  workdir = retriever_flags.RETRIEVER_WORKDIR.value
  return DPRConfig(
      block_store=retriever_flags.BLOCK_STORE.value, retriever=retriever_config,
      bert_dir=bert_dir, batch_size=batch_size,
      train_qa_dataset=retriever_flags.TRAIN_QA_DATASET.value or "",
      train_beir_queries=_TRAIN_BEIR_QUERIES.value, train_beir_qrels=_TRAIN_BEIR_QRELS.value,
      retriever_workdir=workdir, hard_negatives_per_question=_HARD_NEGATIVES.value,
      hard_negative_depth=_HARD_NEGATIVE_DEPTH.value, bm25=index_flags.bm25_settings(),
      bm25_dir=index_flags.BM25_DIR.value, seed=seed,
      query_length=retriever_flags.QUERY_LENGTH.value,
      block_length=retriever_flags.BLOCK_LENGTH.value,
      score_scale=retriever_flags.RETRIEVAL_SCORE_SCALE.value,
      eval_qa_dataset=retriever_flags.EVAL_QA_DATASET.value,
      eval_questions=retriever_flags.EVAL_QUESTIONS.value,
      eval_recall_ks=retriever_flags.eval_recall_ks(), dtype=dtype, remat=remat)


def build_examples(config: DPRConfig, store: BlockStore, num_hard_negatives: int) -> DPRExamples:
  """The training examples, positives and `num_hard_negatives` hard negatives from BM25 over
  `store`."""
  searcher = bm25.open_or_build(store, config.bm25, config.bm25_dir)
  depth = min(config.hard_negative_depth, len(store))
  if config.train_qa_dataset:
    examples = load_qa_dataset(config.train_qa_dataset)
    rankings = searcher.search_texts([example.question for example in examples], depth)
    return qa_examples(examples, store, rankings, num_hard_negatives, seed=config.seed)
  queries, qrels = (beir.read_queries(config.train_beir_queries),
                    beir.read_qrels(config.train_beir_qrels))
  query_ids = sorted(queries)
  ids = searcher.search_texts([queries[qid] for qid in query_ids], depth).ids
  return beir_examples(queries, qrels, store, dict(zip(query_ids, ids)), num_hard_negatives,
                       seed=config.seed)


def batch_blocks(examples: list[DPRExample]) -> np.ndarray:
  """[batch x (1 + negatives)] block ids: the positives, then each example's negatives."""
  negatives = [block for example in examples for block in example.hard_negatives]
  return np.array([example.positive for example in examples] + negatives, np.int32)


class DPRTask(StoreRecallEvaluation, Task):
  name = "dpr"
  # Whether the examples carry BM25 hard negatives (ANCE mines its own from the index).
  bm25_negatives = True

  def __init__(self, config: DPRConfig, bert_params: Any = None):
    """`bert_params`: --bert's weights (unused when starting from a run); None: random."""
    if bool(config.train_qa_dataset) == bool(config.train_beir_queries):
      raise InputError("DPR trains on exactly one of --train_qa_dataset and "
                       "--train_beir_queries (with --train_beir_qrels)")
    if config.train_beir_queries and not config.train_beir_qrels:
      raise InputError("--train_beir_queries needs --train_beir_qrels", field="train_beir_qrels")
    self.config = config
    self.store = BlockStore(config.block_store)
    self.tokenizer = Tokenizer(config.bert_dir)
    self.store.check_tokenizer(self.tokenizer)
    self.model = retriever.DualEncoder(config.retriever, config.dtype, config.remat)
    self._bert_params = bert_params
    built = build_examples(config, self.store,
                           config.hard_negatives_per_question if self.bm25_negatives else 0)
    if not built.examples:
      raise InputError("no training question has a positive block in the store",
                       path=config.train_qa_dataset or config.train_beir_qrels)
    logging.info("DPR: %d training examples (%d questions without a positive dropped, %d "
                 "negatives drawn at random)", len(built.examples), built.num_dropped,
                 built.num_random_negatives)
    self.examples = built.examples
    self.question_ids = self.tokenizer.tokenize([example.question for example in self.examples])
    self.eval_examples = (load_qa_dataset(config.eval_qa_dataset) if config.eval_qa_dataset
                          else [])
    if config.eval_questions:
      self.eval_examples = every_nth(self.eval_examples, config.eval_questions)

  @classmethod
  def from_flags(cls, *, batch_size: int, seed: int, dtype, remat: bool) -> DPRTask:
    config = config_from_flags(batch_size=batch_size, seed=seed, dtype=dtype, remat=remat)
    return cls(config, None if config.retriever_workdir
               else retriever_flags.pretrained_bert_params())

  def model_config(self) -> dict[str, Any]:
    return dict(task=self.name, **self.config.retriever.to_dict())

  def init_params(self, rng: jax.Array) -> Any:
    return retriever.init_params(self.config.retriever, rng, self._bert_params)

  def warm_start(self, params: Any) -> Any:
    workdir = self.config.retriever_workdir
    if not workdir:
      return params
    return embed.restore_latest_retriever(workdir, self.config.retriever, parallel.make_mesh())

  def train_batch(self, step: int, params=None, mesh=None, index=None) -> DPRInputs:
    del params, mesh, index  # DPR batches depend on the step only
    config = self.config
    rows = question_indices(len(self.examples), config.batch_size, seed=config.seed, step=step)
    return self.inputs(rows, [self.examples[row] for row in rows])

  def inputs(self, rows: np.ndarray, examples: list[DPRExample]) -> DPRInputs:
    """The batch of training examples `rows` (`examples`, with the negatives to use)."""
    config = self.config
    block_ids = batch_blocks(examples)
    queries = self.tokenizer.pack([self.question_ids[row] for row in rows],
                                  max_length=config.query_length)
    blocks = self.store.encode(block_ids, max_length=config.block_length,
                               block_format=config.retriever.block_format)
    return DPRInputs(queries, blocks, block_ids)

  def loss(self, params, batch: DPRInputs, rng, deterministic: bool):
    query_embeddings, block_embeddings = self.model.apply(
        {"params": params}, batch.queries, batch.blocks, deterministic, rngs={"dropout": rng})
    result = in_batch_softmax_loss(query_embeddings, block_embeddings, self.config.score_scale,
                                   batch.block_ids)
    return result.loss, {"loss": result.loss, "accuracy": result.accuracy}

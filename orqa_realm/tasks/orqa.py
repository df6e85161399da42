"""ORQA fine-tuning (Lee et al., 2019): the question encoder and a span reader, trained on
question-answer pairs over a frozen block index.

    python -m orqa_realm.train --flagfile=configs/orqa_squad_demo.cfg

The block encoder is frozen (its embeddings are an index published by `python -m orqa_realm.embed`
from an ICT, DPR or REALM run or from Hugging Face weights); the question encoder starts from the
same weights and is trained, as is the reader (initialised from --bert, or from a REALM run's
knowledge-augmented encoder, as REALM fine-tunes). Each step, for every question of the global
batch:

1. `train_batch` (before the step): the question is embedded with the parameters the step starts
   from (without dropout), its top c = min(--retriever_beam_size, corpus) blocks are found by exact
   search on the devices, and their embeddings gathered there. The host labels which of the c
   blocks contain an answer and packs the top k (--reader_beam_size) with the question for the
   reader, labelling the spans whose text is an answer.
2. `loss` (the jitted step): the retrieval logits q . block_embedding of the c blocks are
   recomputed, so that gradients reach the question encoder, and the reader scores every span of
   the k blocks. Loss = early loss (marginal likelihood of the blocks among the c that contain an
   answer) + full loss (of the (block, span) pairs of the k blocks whose text is an answer, span
   logit + block logit); each is zero for a question with nothing correct.

Retrieving before the step rather than inside it gives the same blocks (retrieval is not
differentiated); it lets the host, which holds the block texts, label them. Questions are batched
over the mesh (the reference trained one question per step).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging

from orqa_realm.core import checkpoints, parallel
from orqa_realm import embed
from orqa_realm.data.answer_spans import BlockAnswerMatcher, continuation_mask
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.qa import every_nth, load_qa_dataset, question_indices
from orqa_realm.data.reader_inputs import reader_batch
from orqa_realm.data.tokenization import TokenBatch, Tokenizer
from orqa_realm.core.errors import InputError
from orqa_realm.index import index_flags
from orqa_realm.index.handle import open_index
from orqa_realm.index.storage import IndexRoot, IndexVersion
from orqa_realm.modeling.losses import early_loss, full_loss
from orqa_realm.modeling import mlm, retriever
from orqa_realm.modeling.hf_import import read_config
from orqa_realm.modeling.pretrained import resolve_model_dir
from orqa_realm.modeling.reader import ReaderConfig, SpanReader
from orqa_realm.encode.predict import OpenQAPredictor, ReaderSettings, qa_metrics
from orqa_realm.tasks import retriever_flags
from orqa_realm.tasks.base import Task
from orqa_realm.tasks.realm import KNOWLEDGE_ENCODER

_RETRIEVER_BEAM_SIZE = flags.DEFINE_integer(
    "retriever_beam_size", 5000, "c: blocks retrieved per question for the early loss (at most "
    "the corpus size).")
_READER_BEAM_SIZE = flags.DEFINE_integer(
    "reader_beam_size", 5, "k: top blocks the reader reads per question (full loss, prediction).")
_MAX_SPAN_WIDTH = flags.DEFINE_integer("max_span_width", 10, "Longest answer span, in wordpieces.")
_SPAN_HIDDEN_SIZE = flags.DEFINE_integer(
    "span_hidden_size", 256, "Width of the span scorer's start and end parts.")
_READER_LENGTH = flags.DEFINE_integer(
    "reader_length", 320, "Longest reader input [CLS] question [SEP] block [SEP], in wordpieces.")
_READER_QUESTION_LENGTH = flags.DEFINE_integer(
    "reader_question_length", 32, "Question wordpieces kept in the reader input.")
_PREDICT_BATCH_SIZE = flags.DEFINE_integer(
    "predict_batch_size", 8, "Questions read per reader call when predicting.")


class ORQABatch(NamedTuple):
  questions: TokenBatch  # [batch, query_length]
  block_ids: np.ndarray  # [batch, c] int32 the top c blocks of each question, best first
  block_embeddings: Any  # [batch, c, dim] float32, the top c blocks of each question
  block_has_answer: np.ndarray  # [batch, c] bool
  reader_inputs: TokenBatch  # [batch, k, length] for the top k blocks
  block_mask: np.ndarray  # [batch, k, length] bool
  span_is_answer: np.ndarray  # [batch, k, num_spans] bool


@dataclasses.dataclass(frozen=True)
class ORQAConfig:
  block_store: str
  index_dir: str
  train_qa_dataset: str
  bert_dir: str  # the reader's initial weights and the tokenizer
  reader: ReaderConfig
  batch_size: int
  retriever_workdir: str = ""
  seed: int = 0
  retriever_beam_size: int = 5000
  settings: ReaderSettings = ReaderSettings()
  eval_qa_dataset: str = ""
  eval_questions: int = 0
  eval_recall_ks: tuple[int, ...] = (1, 5, 20)
  predict_batch_size: int = 8
  dtype: Any = jnp.float32
  remat: bool = False


def query_tower_params(params: dict[str, Any], config: retriever.RetrieverConfig) -> dict[str, Any]:
  """The part of the retriever params the query tower uses."""
  tower = "encoder" if config.share_encoders else "query_encoder"
  return {tower: params[tower]}


def init_reader_params(config: ReaderConfig, rng: jax.Array,
                       bert_params: dict[str, Any] | None = None) -> dict[str, Any]:
  """Reader params: the span head freshly initialised, BERT from `bert_params` if given."""
  dummy = TokenBatch(*(jnp.zeros((1, 8), jnp.int32) for _ in range(3)))
  params = SpanReader(config).init(rng, dummy, jnp.ones((1, 8), bool))["params"]
  if bert_params is not None:
    params = dict(params, bert=jax.tree.map(jnp.asarray, bert_params))
  return params


def index_version(index_dir: str) -> IndexVersion:
  """The newest version of the index root `index_dir`, or an error saying how to make one."""
  version = IndexRoot(index_dir).latest()
  if version is None:
    raise InputError("no index version: publish one with python -m orqa_realm.embed",
                     path=index_dir)
  return version


class ORQATask(Task):
  name = "orqa"

  def __init__(self, config: ORQAConfig, *, bert_params: Any = None):
    """`bert_params`: --bert's weights, the reader's initial BERT (and the question encoder's
    when the index was embedded from them); None: random."""
    self.config = config
    self.store = BlockStore(config.block_store)
    self.tokenizer = Tokenizer(config.bert_dir)
    self.store.check_tokenizer(self.tokenizer)
    self.index = open_index(index_version(config.index_dir), self.store, backend="exact")
    self.retriever_config = retriever.RetrieverConfig.from_dict(
        self.index.version.metadata["retriever"])
    self._check_retriever_source()
    self._bert_params = bert_params
    self.retriever_model = retriever.DualEncoder(self.retriever_config, config.dtype, config.remat)
    self.reader_model = SpanReader(config.reader, config.dtype, config.remat)
    self.train_examples = load_qa_dataset(config.train_qa_dataset)
    if not self.train_examples:
      raise InputError("no training questions", path=config.train_qa_dataset)
    self.train_question_ids = self.tokenizer.tokenize(
        [example.question for example in self.train_examples])
    self.eval_examples = load_qa_dataset(config.eval_qa_dataset) if config.eval_qa_dataset else []
    if config.eval_questions:
      self.eval_examples = every_nth(self.eval_examples, config.eval_questions)
    self.continuation = continuation_mask(self.tokenizer)
    self.matcher = BlockAnswerMatcher(self.store)
    self.beam_size = min(config.retriever_beam_size, len(self.store))
    self.reader_beam_size = min(config.settings.reader_beam_size, self.beam_size)

  @classmethod
  def from_flags(cls, *, batch_size: int, seed: int, dtype, remat: bool) -> ORQATask:
    if not (retriever_flags.TRAIN_QA_DATASET.value and index_flags.INDEX_DIR.value
            and retriever_flags.BLOCK_STORE.value):
      raise InputError("--task=orqa needs --train_qa_dataset, --index_dir and --block_store")
    bert_dir = resolve_model_dir(retriever_flags.BERT.value)
    config = ORQAConfig(
        block_store=retriever_flags.BLOCK_STORE.value, index_dir=index_flags.INDEX_DIR.value,
        train_qa_dataset=retriever_flags.TRAIN_QA_DATASET.value, bert_dir=bert_dir,
        reader=ReaderConfig(read_config(bert_dir), span_hidden_size=_SPAN_HIDDEN_SIZE.value,
                            max_span_width=_MAX_SPAN_WIDTH.value),
        batch_size=batch_size, retriever_workdir=retriever_flags.RETRIEVER_WORKDIR.value,
        seed=seed, retriever_beam_size=_RETRIEVER_BEAM_SIZE.value,
        settings=ReaderSettings(
            query_length=retriever_flags.QUERY_LENGTH.value, reader_length=_READER_LENGTH.value,
            reader_question_length=_READER_QUESTION_LENGTH.value,
            reader_beam_size=_READER_BEAM_SIZE.value,
            retrieval_score_scale=retriever_flags.RETRIEVAL_SCORE_SCALE.value),
        eval_qa_dataset=retriever_flags.EVAL_QA_DATASET.value,
        eval_questions=retriever_flags.EVAL_QUESTIONS.value,
        eval_recall_ks=retriever_flags.eval_recall_ks(),
        predict_batch_size=_PREDICT_BATCH_SIZE.value, dtype=dtype, remat=remat)
    return cls(config, bert_params=retriever_flags.pretrained_bert_params())

  def _check_retriever_source(self) -> None:
    """The question encoder must start from the weights the index was embedded with."""
    step, workdir = self.index.version.checkpoint_step, self.config.retriever_workdir
    if workdir:
      saved = retriever.RetrieverConfig.from_dict(checkpoints.read_model_config(workdir))
      if saved != self.retriever_config:
        raise InputError(f"the index was embedded with retriever {self.retriever_config}, the "
                         f"run holds {saved}", path=workdir, field="retriever_workdir")
      if step is None:
        raise InputError("the index was embedded from pretrained weights, not from a checkpoint "
                         "of this run: drop --retriever_workdir", path=self.index.version.directory)
    elif step is not None:
      raise InputError(f"the index was embedded from checkpoint {step} of a training run: pass "
                       "that run as --retriever_workdir", path=self.index.version.directory)
    elif read_config(self.config.bert_dir) != self.retriever_config.bert:
      raise InputError("the index was embedded with another BERT than --bert, whose weights the "
                       "question encoder would start from", path=self.index.version.directory)

  def model_config(self) -> dict[str, Any]:
    version = self.index.version
    return dict(task=self.name, retriever=self.retriever_config.to_dict(),
                reader=self.config.reader.to_dict(), settings=self.config.settings._asdict(),
                index=dict(store_fingerprint=version.store_fingerprint, num_rows=version.num_rows,
                           checkpoint_step=version.checkpoint_step))

  def init_params(self, rng: jax.Array) -> dict[str, Any]:
    retriever_rng, reader_rng = jax.random.split(rng)
    # Without --retriever_workdir the index was embedded from --bert's weights (checked in
    # __init__): so is the question encoder, like the reader. With it, `warm_start` replaces the
    # question encoder.
    retriever_params = retriever.init_params(
        self.retriever_config, retriever_rng,
        None if self.config.retriever_workdir else self._bert_params)
    return dict(retriever=query_tower_params(retriever_params, self.retriever_config),
                reader=init_reader_params(self.config.reader, reader_rng, self._bert_params))

  def warm_start(self, params: dict[str, Any]) -> dict[str, Any]:
    """The question encoder of the --retriever_workdir checkpoint the index was embedded from;
    the reader's BERT from its knowledge-augmented encoder when that run is REALM's."""
    workdir = self.config.retriever_workdir
    if not workdir:
      return params
    reader = checkpoints.CheckpointReader(checkpoints.checkpoint_dir(workdir))
    try:
      retriever_params = embed.restore_retriever(
          reader, self.index.version.checkpoint_step, self.retriever_config, parallel.make_mesh())
      knowledge_bert = self._knowledge_encoder_bert(reader)
    finally:
      reader.close()
    reader_params = params["reader"]
    if knowledge_bert is not None:
      reader_params = dict(reader_params, bert=knowledge_bert)
    return dict(retriever=query_tower_params(retriever_params, self.retriever_config),
                reader=reader_params)

  def _knowledge_encoder_bert(self, reader: checkpoints.CheckpointReader) -> Any:
    """The BERT of a REALM run's knowledge-augmented encoder (REALM's fine-tuning starts the
    reader from it), read through `reader` (the run's checkpoints), or None when
    --retriever_workdir is not a REALM run."""
    workdir = self.config.retriever_workdir
    model_config = checkpoints.read_model_config(workdir)
    if KNOWLEDGE_ENCODER not in model_config:
      return None
    knowledge_config = mlm.KnowledgeEncoderConfig.from_dict(model_config[KNOWLEDGE_ENCODER])
    if knowledge_config.bert != self.config.reader.bert:
      raise InputError(f"the REALM run's knowledge encoder is {knowledge_config.bert}, the reader "
                       f"--bert is {self.config.reader.bert}", path=workdir,
                       field="retriever_workdir")
    logging.info("ORQA: the reader starts from the knowledge-augmented encoder of %s", workdir)
    shapes = jax.eval_shape(lambda: mlm.init_params(knowledge_config, jax.random.key(0)))
    restored = reader.restore_params(
        self.index.version.checkpoint_step,
        {KNOWLEDGE_ENCODER: {"bert": checkpoints.abstract_with_sharding(
            shapes["bert"], parallel.replicated(parallel.make_mesh()))}})
    return restored[KNOWLEDGE_ENCODER]["bert"]

  def train_batch(self, step: int, params=None, mesh=None, index=None) -> ORQABatch:
    del index  # ORQA's index is frozen: its own, opened at start-up
    if params is None:
      raise ValueError("ORQA batches are retrieved with the question encoder: pass params")
    mesh = mesh if mesh is not None else parallel.make_mesh()
    config = self.config
    questions = question_indices(len(self.train_examples), config.batch_size, seed=config.seed,
                                 step=step)
    examples = [self.train_examples[q] for q in questions]
    # The questions' wordpieces are tokenized once, at start-up.
    question_tokens = self.tokenizer.pack([self.train_question_ids[q] for q in questions],
                                          max_length=config.settings.query_length)
    embed_queries = embed.make_tower_embedder(self.retriever_config, config.dtype, mesh,
                                              retriever.DualEncoder.embed_queries)
    query_embeddings = embed_queries(params["retriever"], parallel.to_global(question_tokens, mesh))
    _, block_ids = self.index.searcher.search_on_device(query_embeddings, self.beam_size)
    block_embeddings = self.index.searcher.rows_on_device(block_ids)  # [batch, c, dim]
    block_ids = parallel.fetch_replicated(block_ids)  # [batch, c]
    has_answer = np.stack([self.matcher.has_answer(ids, example.answers, example.kind)
                           for ids, example in zip(block_ids, examples)])
    read = reader_batch(
        self.store, [self.train_question_ids[q] for q in questions],
        block_ids[:, :self.reader_beam_size], max_length=config.settings.reader_length,
        max_question_length=config.settings.reader_question_length,
        max_span_width=config.reader.max_span_width, continuation=self.continuation,
        answers=[(example.answers, example.kind) for example in examples])
    return ORQABatch(question_tokens, block_ids, block_embeddings, has_answer, read.inputs, read.block_mask,
                     read.span_is_answer)

  def loss(self, params, batch: ORQABatch, rng, deterministic: bool):
    query_rng, reader_rng = jax.random.split(rng)
    query_embeddings = self.retriever_model.apply(
        {"params": params["retriever"]}, batch.questions, deterministic,
        method=retriever.DualEncoder.embed_queries, rngs={"dropout": query_rng})  # [batch, dim]
    retrieval_logits = self.config.settings.retrieval_score_scale * jnp.einsum(
        "bd,bcd->bc", query_embeddings, batch.block_embeddings,
        preferred_element_type=jnp.float32)  # [batch, c]
    early = early_loss(retrieval_logits, batch.block_has_answer)

    questions, k, length = batch.reader_inputs.token_ids.shape
    flat = lambda array: array.reshape(questions * k, *array.shape[2:])
    read = self.reader_model.apply(
        {"params": params["reader"]}, TokenBatch(*(flat(a) for a in batch.reader_inputs)),
        flat(batch.block_mask), deterministic, rngs={"dropout": reader_rng})
    span_logits = (read.logits.reshape(questions, k, -1)
                   + retrieval_logits[:, :k, None])  # [batch, k, spans]
    full = full_loss(span_logits, batch.span_is_answer)

    best_span = jnp.argmax(span_logits.reshape(questions, -1), axis=-1)  # [batch]
    best_is_answer = jnp.take_along_axis(batch.span_is_answer.reshape(questions, -1),
                                         best_span[:, None], axis=1)[:, 0]
    loss = early.loss + full.loss
    return loss, dict(loss=loss, early_loss=early.loss, full_loss=full.loss,
                      early_has_answer=early.has_correct, reader_has_answer=full.has_correct,
                      top1_has_answer=jnp.mean(batch.block_has_answer[:, 0]),
                      best_span_is_answer=jnp.mean(best_is_answer))

  def predictor(self, mesh=None) -> OpenQAPredictor:
    return OpenQAPredictor(
        self.store, self.index.searcher, self.tokenizer, self.retriever_config, self.config.reader,
        self.config.settings, continuation=self.continuation,
        batch_size=self.config.predict_batch_size, dtype=self.config.dtype, mesh=mesh)

  def evaluate(self, params, mesh) -> dict[str, float]:
    """Exact match and retrieval recall@k on the held-out questions (none without them)."""
    if not self.eval_examples:
      return {}
    predictions, result = self.predictor(mesh).predict(params, self.eval_examples,
                                                       max(self.config.eval_recall_ks))
    return qa_metrics(self.eval_examples, predictions, result, self.store, self.matcher,
                      self.config.eval_recall_ks)


class ORQARun(NamedTuple):
  """A trained ORQA model, read back from its run directory."""
  retriever_config: retriever.RetrieverConfig
  reader_config: ReaderConfig
  settings: ReaderSettings
  params: dict[str, Any]  # {"retriever": query tower params, "reader": reader params}
  step: int
  index: dict[str, Any]  # the frozen index it was trained over (store fingerprint, step, rows)


def restore_run(workdir: str, step: int | None, mesh) -> ORQARun:
  """The ORQA model of `workdir` at checkpoint `step` (None: the latest), replicated over
  `mesh`; the optimizer state is not read."""
  model_config = checkpoints.read_model_config(workdir)
  if model_config.get("task") != ORQATask.name:
    raise InputError(f"not an ORQA run (task {model_config.get('task')!r})", path=workdir)
  retriever_config = retriever.RetrieverConfig.from_dict(model_config["retriever"])
  reader_config = ReaderConfig.from_dict(model_config["reader"])
  reader = checkpoints.CheckpointReader(checkpoints.checkpoint_dir(workdir))
  step = reader.latest_step() if step is None else step
  if step is None:
    raise InputError("the run has no checkpoint yet", path=reader.directory)
  shapes = jax.eval_shape(lambda: dict(
      retriever=query_tower_params(retriever.init_params(retriever_config, jax.random.key(0)),
                                   retriever_config),
      reader=init_reader_params(reader_config, jax.random.key(0))))
  params = reader.restore_params(
      step, checkpoints.abstract_with_sharding(shapes, parallel.replicated(mesh)))
  reader.close()
  return ORQARun(retriever_config, reader_config, ReaderSettings(**model_config["settings"]),
                 params, step, model_config["index"])


def check_index_of_run(run: ORQARun, version: IndexVersion) -> None:
  """Refuses an index other than the frozen one the run was trained over: the question encoder
  learned to search those very embeddings."""
  expected = (run.index["store_fingerprint"], run.index["num_rows"], run.index["checkpoint_step"])
  found = (version.store_fingerprint, version.num_rows, version.checkpoint_step)
  if expected != found:
    raise InputError(f"the run was trained over an index of (store, rows, checkpoint) {expected}, "
                     f"this one is {found}", path=version.directory, field="index_dir")

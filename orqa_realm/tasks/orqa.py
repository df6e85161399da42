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
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from orqa_realm.core import checkpoints, parallel, run_directory
from orqa_realm.core.config import nested, setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.answer_spans import BlockAnswerMatcher, continuation_mask
from orqa_realm.data.qa import load_qa_dataset, question_indices
from orqa_realm.data.reader_inputs import LENGTH_MULTIPLE, reader_batch
from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.encode import embedding, runs
from orqa_realm.encode.predict import OpenQAPredictor, ReaderSettings, qa_metrics
from orqa_realm.modeling import mlm, reader, retriever
from orqa_realm.modeling.losses import early_loss, full_loss
from orqa_realm.modeling.reader import ReaderConfig, SpanReader
from orqa_realm.tasks.base import Need, SavedRetriever, StepContext, Task, TaskContext
from orqa_realm.tasks.common import (QuestionTaskConfig, batch_length_multiple,
                                    frozen_index_retriever, open_frozen_index)


class ORQABatch(NamedTuple):
  questions: TokenBatch  # [batch, query_length]
  block_ids: np.ndarray  # [batch, c] int32 the top c blocks of each question, best first
  block_embeddings: Any  # [batch, c, dim] float32, the top c blocks of each question
  block_has_answer: np.ndarray  # [batch, c] bool
  reader_inputs: TokenBatch  # [batch, k, length] for the top k blocks
  block_mask: np.ndarray  # [batch, k, length] bool
  span_is_answer: np.ndarray  # [batch, k, num_spans] bool


@dataclasses.dataclass(frozen=True)
class ORQAConfig(QuestionTaskConfig):
  """The settings of ORQA fine-tuning. The retriever's are the index's (the run it was embedded
  from, or --bert's weights), whose input settings (query length, score scale) may be set."""
  index_dir: str = setting(
      "", "Index root directory: versions published by `python -m orqa_realm.embed` or the "
      "refresher, the newest named by its LATEST file.")
  reader: ReaderConfig = nested(ReaderConfig())
  reader_settings: ReaderSettings = nested(ReaderSettings())
  retriever_beam_size: int = setting(
      5000, "c: blocks retrieved per question for the early loss (at most the corpus size).")
  predict_batch_size: int = setting(8, "Questions read per reader call when predicting.")


class ORQATask(Task):
  name = runs.ORQA_TASK
  config_class = ORQAConfig
  needs = frozenset({Need.PARAMS})
  # ORQA embeds no block: the index's block length stays (its queries' length may change).
  fixed_retriever_fields = retriever.BLOCK_ENCODER_FIELDS
  trains_block_tower = False
  accumulates_gradients = True  # means over questions of each one's marginal losses

  def __init__(self, config: ORQAConfig, context: TaskContext):
    for name in ("train_qa_dataset", "index_dir"):
      if not getattr(config, name):
        raise InputError(f"--task=orqa needs --{name}", field=name)
    config, self.store, self.tokenizer, self.index = open_frozen_index(config)
    self.config = dataclasses.replace(config, reader=config.reader.with_bert(
        config.source.bert_config()))
    self.context = context
    dtype = jnp.dtype(context.dtype)
    self.retriever_model = retriever.DualEncoder(self.config.retriever, dtype, context.remat)
    self.reader_model = SpanReader(self.config.reader, dtype, context.remat)
    self.train_examples = load_qa_dataset(config.train_qa_dataset)
    if not self.train_examples:
      raise InputError("no training questions", path=config.train_qa_dataset)
    self.train_question_ids = self.tokenizer.tokenize(
        [example.question for example in self.train_examples])
    self.eval_examples = config.evaluation.examples()
    self.continuation = continuation_mask(self.tokenizer)
    self.matcher = BlockAnswerMatcher(self.store)
    self.beam_size = min(config.retriever_beam_size, len(self.store))
    self.reader_beam_size = min(config.reader_settings.reader_beam_size, self.beam_size)

  @classmethod
  def saved_retriever(cls, config: ORQAConfig) -> SavedRetriever:
    """The retriever the index was embedded with: its question encoder is trained."""
    return frozen_index_retriever(config.index_dir)

  def run_model(self) -> dict[str, Any]:
    return runs.orqa_model(self.config.retriever, self.tokenizer.fingerprint, self.config.reader,
                           self.config.reader_settings, self.index.version)

  @functools.cached_property
  def pretrained(self):
    """--bert's weights (None with --from_scratch), read when first needed."""
    return self.config.source.pretrained()

  def init_params(self, rng: jax.Array) -> dict[str, Any]:
    retriever_rng, reader_rng = jax.random.split(rng)
    bert_params = self.pretrained.params if self.pretrained else None
    # Without --retriever_workdir the index was embedded from --bert's weights (checked in
    # __init__): so is the question encoder, like the reader. With it, `warm_start` replaces the
    # question encoder.
    config = self.config.retriever
    retriever_params = retriever.init_params(
        config, retriever_rng, None if self.config.retriever_workdir else bert_params)
    return dict(retriever=retriever.tower_params(retriever_params, config, "query"),
                reader=reader.init_params(self.config.reader, reader_rng, bert_params))

  def warm_start(self, params: dict[str, Any], mesh) -> dict[str, Any]:
    """The question encoder of the --retriever_workdir checkpoint the index was embedded from;
    the reader's BERT from its knowledge-augmented encoder when that run is REALM's."""
    workdir = self.config.retriever_workdir
    if not workdir:
      return params
    run = runs.open_retriever_run(workdir)
    step = self.index.version.checkpoint_step
    # One reader of the run's checkpoints for both parts.
    with checkpoints.CheckpointReader(run_directory.checkpoint_dir(workdir)) as source:
      retriever_params = runs.restore_retriever(source, step, run.retriever, mesh, tower="query")
      knowledge_bert = runs.restore_knowledge_encoder_bert(run, source, step, mesh)
    reader_params = params["reader"]
    if knowledge_bert is not None:
      if run.model[mlm.KNOWLEDGE_ENCODER]["bert"] != self.config.reader.bert.to_dict():
        raise InputError("the REALM run's knowledge encoder is not the reader's --bert",
                         path=workdir, field="retriever_workdir")
      logging.info("ORQA: the reader starts from the knowledge-augmented encoder of %s", workdir)
      reader_params = dict(reader_params, bert=knowledge_bert)
    return dict(retriever=retriever_params, reader=reader_params)

  def train_batch(self, step: int, context: StepContext) -> ORQABatch:
    config, mesh = self.config, context.mesh
    questions = question_indices(len(self.train_examples), self.context.batch_size,
                                 seed=self.context.seed, step=step)[context.rows]
    examples = [self.train_examples[q] for q in questions]
    # The questions' wordpieces are tokenized once, at start-up.
    question_tokens = self.tokenizer.pack([self.train_question_ids[q] for q in questions],
                                          max_length=config.retriever.query_length)
    embed_queries = embedding.make_tower_embedder(config.retriever, jnp.dtype(self.context.dtype),
                                                  mesh, retriever.DualEncoder.embed_queries)
    # Every host's questions are searched together on the devices.
    query_embeddings = embed_queries(context.params["retriever"],
                                     parallel.global_from_local(question_tokens, mesh))
    _, block_ids = self.index.searcher.search_on_device(query_embeddings, self.beam_size)
    block_embeddings = self.index.searcher.rows_on_device(block_ids)  # [batch, c, dim] global
    block_ids = parallel.fetch_replicated(block_ids)[context.rows]  # [rows, c]
    has_answer = np.stack([self.matcher.has_answer(ids, example.answers, example.kind)
                           for ids, example in zip(block_ids, examples)])
    reader_length = config.reader_settings.reader_length
    read = reader_batch(
        self.store, [self.train_question_ids[q] for q in questions],
        block_ids[:, :self.reader_beam_size], max_length=reader_length,
        max_question_length=config.reader_settings.reader_question_length,
        max_span_width=config.reader.max_span_width, continuation=self.continuation,
        answers=[(example.answers, example.kind) for example in examples],
        length_multiple=batch_length_multiple(LENGTH_MULTIPLE, reader_length))
    return ORQABatch(question_tokens, block_ids, block_embeddings, has_answer, read.inputs,
                     read.block_mask, read.span_is_answer)

  def loss(self, params, batch: ORQABatch, rng, deterministic: bool):
    query_rng, reader_rng = jax.random.split(rng)
    query_embeddings = self.retriever_model.apply(
        {"params": params["retriever"]}, batch.questions, deterministic,
        method=retriever.DualEncoder.embed_queries, rngs={"dropout": query_rng})  # [batch, dim]
    retrieval_logits = self.config.retriever.score_scale * jnp.einsum(
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

  def predictor(self, mesh) -> OpenQAPredictor:
    return OpenQAPredictor(
        self.store, self.index.searcher, self.tokenizer, self.config.retriever,
        self.config.reader, self.config.reader_settings, continuation=self.continuation,
        batch_size=self.config.predict_batch_size, dtype=jnp.dtype(self.context.dtype),
        mesh=mesh)

  def evaluate(self, params, mesh, index=None) -> dict[str, float]:
    """Exact match and retrieval recall@k on the held-out questions (none without them)."""
    del index  # the frozen index it trains over is its own
    if not self.eval_examples:
      return {}
    ks = self.config.evaluation.sorted_ks
    predictions, result = self.predictor(mesh).predict(params, self.eval_examples, max(ks))
    return qa_metrics(self.eval_examples, predictions, result, self.store, self.matcher, ks)

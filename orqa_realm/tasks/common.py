"""What tasks share: the block store and the pretrained BERT they start from, the retriever
they train (its BERT from --bert, or a warm-start run's), and the dual-encoder tasks' common
part (ICT, DPR, ANCE)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from orqa_realm.core.config import nested, setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import BlockStore, StoreSource
from orqa_realm.data.pretrained import resolve_model_dir
from orqa_realm.encode import embedding, runs
from orqa_realm.modeling.bert import BertConfig
from orqa_realm.modeling.hf_import import HFBert, load_hf_bert, read_config
from orqa_realm.data.qa import QAEvaluation
from orqa_realm.data.tokenization import TokenBatch, Tokenizer
from orqa_realm.index.handle import LoadedIndex, open_index
from orqa_realm.index.storage import IndexVersion
from orqa_realm.modeling import retriever
from orqa_realm.modeling.retriever import RetrieverConfig
from orqa_realm.tasks.base import SavedRetriever, StepContext, Task, TaskContext
from orqa_realm.tasks.retrieval_eval import StoreRecallEvaluator


@dataclasses.dataclass(frozen=True)
class StoreAndBert(StoreSource):
  """The block store a task reads and the pretrained BERT its models start from."""
  from_scratch: bool = setting(
      False, "Initialise BERT randomly (keeping --bert's architecture and vocabulary).")

  def bert_dir(self) -> str:
    return resolve_model_dir(self.bert)

  def bert_config(self) -> BertConfig:
    return read_config(self.bert_dir())

  def pretrained(self) -> HFBert | None:
    """--bert's weights, or None with --from_scratch."""
    return None if self.from_scratch else load_hf_bert(self.bert_dir())


def with_store_path(config: Any, store: BlockStore) -> Any:
  """`config` with its block store named by the opened store's absolute path (or URI), as the
  run records it: a refresher or warm start elsewhere then finds it."""
  return dataclasses.replace(config, source=dataclasses.replace(config.source,
                                                                block_store=store.directory))


def check_warm_start(config: RetrieverTaskConfig) -> None:
  """Refuses --from_scratch with --retriever_workdir: the run's weights would replace the random
  ones."""
  if config.source.from_scratch and config.retriever_workdir:
    raise InputError("--from_scratch and --retriever_workdir both say where the retriever "
                     "starts: pass one", field="from_scratch")


def own_retriever(retriever: RetrieverConfig, source: StoreAndBert) -> RetrieverConfig:
  """`retriever` with its BERT architecture: already there (taken from a saved run or index),
  or --bert's."""
  return retriever if retriever.bert is not None else retriever.with_bert(source.bert_config())


def warm_start_retriever(workdir: str, source: StoreAndBert) -> SavedRetriever:
  """The retriever of the run a task warm-starts from (`--retriever_workdir`); refused when its
  BERT is not --bert's, whose tokenizer reads the task's queries."""
  run = runs.open_retriever_run(workdir)
  if run.retriever.bert != source.bert_config():
    raise InputError("the run's BERT architecture is not --bert's", path=workdir,
                     field="retriever_workdir")
  runs.check_tokenizer(run, Tokenizer(source.bert_dir()).fingerprint, f"--bert={source.bert}")
  return SavedRetriever(run.retriever, f"--retriever_workdir={workdir}")


@dataclasses.dataclass(frozen=True)
class RetrieverTaskConfig:
  """The settings of a task that trains a retriever: the store and BERT, the retriever, and the
  run it may start from."""
  source: StoreAndBert = nested(StoreAndBert())
  retriever: RetrieverConfig = nested(RetrieverConfig())
  retriever_workdir: str = setting(
      "", "A run (ICT, DPR, REALM, ...) whose latest checkpoint the retriever starts from, with "
      "that run's retriever settings; empty: --bert's weights.")


@dataclasses.dataclass(frozen=True)
class QuestionTaskConfig(RetrieverTaskConfig):
  """A retriever task trained on questions, evaluated on held-out ones."""
  train_qa_dataset: str = setting(
      "", "Training questions as FORMAT:PATH (nq_open, webquestions, curatedtrec, triviaqa, "
      "squad, or tfds:NAME@SPLIT).")
  evaluation: QAEvaluation = nested(QAEvaluation())


def batch_length_multiple(multiple: int, max_length: int) -> int:
  """What a host rounds its rows' padded length up to: `multiple` on one host; on several, the
  full `max_length`, since each host pads its own rows without seeing the others' and the rows
  of one global array must share a length."""
  return multiple if jax.process_count() == 1 else max_length


def saved_retriever_of(config: RetrieverTaskConfig) -> SavedRetriever | None:
  """The warm-start run's retriever, or None without --retriever_workdir."""
  if not config.retriever_workdir:
    return None
  return warm_start_retriever(config.retriever_workdir, config.source)


class DualEncoderTask(Task):
  """The common part of tasks that train both towers of the dual encoder (ICT, DPR, ANCE): the
  store and tokenizer, the model, its start (--bert's weights, or a warm-start run's) and the
  answer-recall evaluation over the whole store. `config` has `source`, `retriever`,
  `evaluation` and, where the task reads it, `retriever_workdir`."""

  def __init__(self, config: Any, context: TaskContext):
    if getattr(config, "retriever_workdir", ""):
      check_warm_start(config)
    self.store, self.tokenizer = config.source.open_store()
    self.config = dataclasses.replace(with_store_path(config, self.store),
                                      retriever=own_retriever(config.retriever, config.source))
    self.context = context
    self.model = retriever.DualEncoder(self.config.retriever, jnp.dtype(context.dtype),
                                       context.remat)
    self.recall = StoreRecallEvaluator(self.store, self.tokenizer, config.evaluation.examples(),
                                       config.evaluation.recall_ks, self.config.retriever,
                                       context.dtype)

  @property
  def warm_start_workdir(self) -> str:
    return getattr(self.config, "retriever_workdir", "")

  def run_model(self) -> dict[str, Any]:
    return runs.retriever_model(self.config.retriever, self.tokenizer.fingerprint)

  @functools.cached_property
  def pretrained(self) -> HFBert | None:
    """--bert's weights (None with --from_scratch or a warm start), read when first needed."""
    return None if self.warm_start_workdir else self.config.source.pretrained()

  def init_params(self, rng: jax.Array) -> Any:
    return retriever.init_params(self.config.retriever, rng,
                                 self.pretrained.params if self.pretrained else None)

  def warm_start(self, params: Any, mesh) -> Any:
    if not self.warm_start_workdir:
      return params
    return runs.restore_latest_retriever(runs.open_retriever_run(self.warm_start_workdir), mesh)

  def evaluate(self, params, mesh, index=None) -> dict[str, float]:
    del index  # recall embeds the whole store with the current parameters
    return self.recall(params, mesh)


def rank_in_refreshed_index(context: StepContext, queries: TokenBatch, config: RetrieverConfig,
                            dtype: str, depth: int) -> np.ndarray:
  """[rows, depth] int64: this host's rows of the step's questions (`queries`, its rows of the
  global batch) ranked in the index version the loop handed over, embedded with the parameters
  the step starts from (every host's questions, as a search over the mesh takes them)."""
  query_embeddings = embedding.embed_query_tokens(
      context.params, queries, config, dtype=jnp.dtype(dtype), mesh=context.mesh)
  searcher = context.index.searcher
  return searcher.search(query_embeddings, min(depth, searcher.num_rows)).ids[context.rows]


def check_query_tower_source(version: IndexVersion, config: RetrieverConfig, workdir: str,
                             tokenizer: Tokenizer, source: StoreAndBert) -> None:
  """Refuses a question encoder that would not start from the weights a frozen index was
  embedded with (ORQA, ADORE): the index's run (`workdir`, its checkpoint) or, for an index of
  pretrained weights, --bert's."""
  step = version.checkpoint_step
  embedding.check_query_encoder(version, config, tokenizer.fingerprint,
                                fields=retriever.ARCHITECTURE_FIELDS)
  if workdir:
    # The run's input lengths may differ from the index's (blocks embedded longer than they
    # were trained): its architecture may not.
    run = runs.open_retriever_run(workdir)
    if step is None:
      raise InputError("the index was embedded from pretrained weights, not from a checkpoint "
                       "of this run: drop --retriever_workdir", path=version.directory)
    runs.check_embedded_from(version, run)
    embedding.check_query_encoder(version, run.retriever, tokenizer.fingerprint,
                                  fields=retriever.ARCHITECTURE_FIELDS)
  elif step is not None:
    raise InputError(f"the index was embedded from checkpoint {step} of a training run: pass "
                     "that run as --retriever_workdir", path=version.directory)
  elif source.bert_config() != config.bert:
    raise InputError("the index was embedded with another BERT than --bert, whose weights the "
                     "question encoder would start from", path=version.directory)


def frozen_index_retriever(index_dir: str) -> SavedRetriever:
  """The retriever a frozen index (its newest version) was embedded with, whose question tower
  a task trains over it (ORQA, ADORE)."""
  return _retriever_of(embedding.latest_version(index_dir))


def _retriever_of(version: IndexVersion) -> SavedRetriever:
  return SavedRetriever(embedding.indexed_retriever(version), f"the index {version.directory}")


class FrozenIndexStart(NamedTuple):
  """What a task training a question tower over a frozen index starts from."""
  config: Any  # the task's config, its store path absolute and its retriever the index's
  store: BlockStore
  tokenizer: Tokenizer
  index: LoadedIndex


def open_frozen_index(config: Any) -> FrozenIndexStart:
  """Opens the store and the newest version of `config.index_dir` (exact search),
  fills in the index's retriever when --bert's is not given, and refuses a question tower that
  would not start from the weights the index was embedded with."""
  if config.source.from_scratch and not config.retriever_workdir:
    raise InputError("--from_scratch would start the question encoder at random, but it must "
                     "start from the weights the index was embedded with", field="from_scratch")
  store, tokenizer = config.source.open_store()
  config = with_store_path(config, store)
  index = open_index(embedding.latest_version(config.index_dir), store, backend="exact")
  if config.retriever.bert is None:
    # The opened version's, not the newest's: a publish may have landed since.
    config = dataclasses.replace(config, retriever=_retriever_of(index.version).config)
  check_query_tower_source(index.version, config.retriever, config.retriever_workdir, tokenizer,
                           config.source)
  return FrozenIndexStart(config, store, tokenizer, index)

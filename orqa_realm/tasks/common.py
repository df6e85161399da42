"""Settings and start-up steps every task shares: the block store and the pretrained BERT it
starts from, the retriever it trains (its BERT from --bert, or a warm-start run's)."""

from __future__ import annotations

import dataclasses

from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import StoreSource
from orqa_realm.data.pretrained import resolve_model_dir
from orqa_realm.encode import runs
from orqa_realm.modeling.bert import BertConfig
from orqa_realm.modeling.hf_import import HFBert, load_hf_bert, read_config
from orqa_realm.modeling.retriever import RetrieverConfig
from orqa_realm.tasks.base import SavedRetriever


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


def own_retriever(retriever: RetrieverConfig, source: StoreAndBert) -> RetrieverConfig:
  """`retriever` with its BERT architecture: already there (taken from a saved run or index),
  or --bert's."""
  return retriever if retriever.bert is not None else retriever.with_bert(source.bert_config())


def warm_start_retriever(workdir: str, source: StoreAndBert) -> SavedRetriever:
  """The retriever of the run a task warm-starts from (`--retriever_workdir`); refused when its
  BERT is not --bert's, whose tokenizer reads the task's queries."""
  run = runs.open_retriever_run(workdir)
  if run.retriever.bert != source.bert_config():
    raise InputError("the run's BERT is not --bert's, whose tokenizer would read the queries",
                     path=workdir, field="retriever_workdir")
  return SavedRetriever(run.retriever, f"--retriever_workdir={workdir}")

"""Tiny ORQA and ADORE setups shared by their tests and multi-device subprocesses: the tiny random
BERT of tiny_ict for the question encoder and the reader, over an index of the real SQuAD block
store embedded by a random tiny block tower (so the index is "from pretrained weights", step
None), and questions of the bundled SQuAD slice."""

import dataclasses
import os

import jax

from orqa_realm.data.blocks import BlockStore
from orqa_realm.encode.embedding import EmbedSettings, IndexConfig, embed_and_publish
from orqa_realm.encode.predict import ReaderSettings
from orqa_realm.index.storage import IndexRoot
from orqa_realm.modeling import retriever
from orqa_realm.modeling.reader import ReaderConfig
from orqa_realm.tasks.adore import ADOREConfig, ADORETask
from orqa_realm.tasks.orqa import ORQAConfig, ORQATask
from orqa_realm.tasks.pairs import TrainingPairs
from tests.conftest import DEMO_SQUAD
from tests.tasks.tiny_ict import TINY_RETRIEVER, tiny_context, tiny_source


def publish_tiny_index(block_store: str, index_dir: str) -> None:
  """Publishes (once) the embeddings of a random tiny block tower as an index version."""
  if IndexRoot(index_dir).latest() is not None:
    return
  store = BlockStore(block_store)
  params = retriever.init_params(TINY_RETRIEVER, jax.random.key(0))
  embed_and_publish(store, params, TINY_RETRIEVER,
                    IndexConfig(index_dir=index_dir,
                                embedding=EmbedSettings(embed_batch_size=256,
                                                        embed_dtype="float32")),
                    checkpoint_step=None, run=None)


def tiny_orqa_task(block_store: str, bert_dir: str, index_dir: str, batch_size: int = 8,
                   seed: int = 0, **overrides) -> ORQATask:
  """`overrides`: ORQAConfig fields. The retriever is the index's unless overridden."""
  publish_tiny_index(block_store, index_dir)
  config = ORQAConfig(
      # The question encoder starts from the weights the index was embedded from (a random
      # tower here, which ORQA cannot tell from --bert's): not from scratch.
      source=tiny_source(block_store, bert_dir, from_scratch=False), index_dir=index_dir,
      train_qa_dataset=f"squad:{DEMO_SQUAD}",
      reader=ReaderConfig(span_hidden_size=8, max_span_width=4),
      reader_settings=ReaderSettings(reader_length=96, reader_question_length=12,
                                     reader_beam_size=2),
      retriever_beam_size=300)
  return ORQATask(dataclasses.replace(config, **overrides), tiny_context(batch_size, seed))


def tiny_index_dir(workdir: str) -> str:
  return os.path.join(workdir, "tiny_index")


def tiny_adore_task(block_store: str, bert_dir: str, index_dir: str, qa_dataset: str,
                    batch_size: int = 8, seed: int = 0, **overrides) -> ADORETask:
  """ADORE over the same tiny index, on `qa_dataset`'s questions; `overrides`: ADOREConfig
  fields."""
  publish_tiny_index(block_store, index_dir)
  config = ADOREConfig(source=tiny_source(block_store, bert_dir, from_scratch=False),
                       index_dir=index_dir,
                       pairs=TrainingPairs(qa_dataset=qa_dataset, negative_depth=20),
                       hard_negatives_per_question=3, depth=50)
  return ADORETask(dataclasses.replace(config, **overrides), tiny_context(batch_size, seed))

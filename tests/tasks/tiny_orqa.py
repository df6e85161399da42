"""A tiny ORQA setup shared by the ORQA tests and their multi-device subprocess: the tiny random
BERT of tiny_ict for the question encoder and the reader, over an index of the real SQuAD block
store embedded by a random tiny block tower (so the index is "from pretrained weights", step
None), and questions of the bundled SQuAD slice."""

import os

import jax
import jax.numpy as jnp

from orqa_realm.data.blocks import BlockStore
from orqa_realm.embed import embed_and_publish
from orqa_realm.index.storage import IndexRoot
from orqa_realm.modeling import retriever
from orqa_realm.modeling.reader import ReaderConfig
from orqa_realm.encode.predict import ReaderSettings
from orqa_realm.tasks.orqa import ORQAConfig, ORQATask
from tests.conftest import DEMO_SQUAD
from tests.tasks.tiny_ict import TINY_BERT

TINY_RETRIEVER = retriever.RetrieverConfig(TINY_BERT, projection_size=16)


def publish_tiny_index(block_store: str, index_dir: str) -> None:
  """Publishes (once) the embeddings of a random tiny block tower as an index version."""
  if IndexRoot(index_dir).latest() is not None:
    return
  store = BlockStore(block_store)
  params = retriever.init_params(TINY_RETRIEVER, jax.random.key(0))
  embed_and_publish(store, params, TINY_RETRIEVER, IndexRoot(index_dir), checkpoint_step=None,
                    block_length=48, batch_size=256, dtype=jnp.float32)


def tiny_orqa_task(block_store: str, bert_dir: str, index_dir: str, batch_size: int = 8,
                   **overrides) -> ORQATask:
  publish_tiny_index(block_store, index_dir)
  config = dict(
      block_store=block_store, index_dir=index_dir, train_qa_dataset=f"squad:{DEMO_SQUAD}",
      bert_dir=bert_dir, reader=ReaderConfig(TINY_BERT, span_hidden_size=8, max_span_width=4),
      batch_size=batch_size, retriever_beam_size=300,
      settings=ReaderSettings(query_length=16, reader_length=96, reader_question_length=12,
                              reader_beam_size=2),
      dtype=jnp.float32)
  config.update(overrides)
  return ORQATask(ORQAConfig(**config))


def tiny_index_dir(workdir: str) -> str:
  return os.path.join(workdir, "tiny_index")

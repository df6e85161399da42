"""Run in a subprocess at XLA's full optimisation (`tests.conftest.run_optimised`): ORQA with
MiniLM as retriever and reader trained 24 steps of 4 questions over a published index of MiniLM's
block embeddings, with the exact match evaluated on the training questions at steps 0 and 24.

Arguments: the block store's directory, MiniLM's directory, the index directory (MiniLM as
trained: mean pooling, one encoder, blocks joined and cut to 64 wordpieces), the questions
("squad:PATH") and the workdir, whose metrics.jsonl the test reads. Prints one JSON line, the
step reached.
"""

import json
import sys

from orqa_realm.data.qa import QAEvaluation
from orqa_realm.encode.predict import ReaderSettings
from orqa_realm.modeling import retriever
from orqa_realm.modeling.hf_import import load_hf_bert
from orqa_realm.modeling.reader import ReaderConfig
from orqa_realm.tasks.base import TaskContext
from orqa_realm.tasks.common import StoreAndBert
from orqa_realm.tasks.orqa import ORQAConfig, ORQATask
from orqa_realm.training import loop


def main(store_dir: str, minilm_dir: str, index_dir: str, questions: str,
         workdir: str) -> dict[str, int]:
  config = retriever.RetrieverConfig(load_hf_bert(minilm_dir).config, projection_size=0,
                                     pooling="mean", share_encoders=True,
                                     block_format="joined", query_length=32, block_length=64)
  task = ORQATask(ORQAConfig(
      source=StoreAndBert(block_store=store_dir, bert=minilm_dir),
      index_dir=index_dir, train_qa_dataset=questions, retriever=config,
      reader=ReaderConfig(span_hidden_size=64),
      reader_settings=ReaderSettings(reader_length=128, reader_question_length=24,
                                     reader_beam_size=2),
      evaluation=QAEvaluation(qa_dataset=questions)),
      TaskContext(batch_size=4, seed=0, dtype="float32", remat="none"))
  state = loop.train(task, loop.TrainConfig(
      workdir=workdir, num_train_steps=24, batch_size=4, learning_rate=1e-4,
      warmup_steps=2, log_every_steps=1, eval_every_steps=24, checkpoint_every_steps=1000,
      async_checkpoints=False))
  return dict(step=int(state.step))


if __name__ == "__main__":
  print(json.dumps(main(*sys.argv[1:])))

"""Run in a subprocess at XLA's full optimisation (`tests.conftest.run_optimised`): MiniLM's BERT
with a fresh cross-encoder head trained 40 steps on 16 questions (4 x 4 pairs a step), and the
answer R@1 of BM25's top 10 of those questions reranked before and after, and of BM25 alone.

Arguments: the block store's directory, MiniLM's directory, the QA set ("squad:PATH") and a
workdir. Prints one JSON line, {"before", "after", "bm25"}; the test asserts on it.
"""

import json
import sys

import jax

from orqa_realm.core import parallel
from orqa_realm.data.answers import answer_hits
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.qa import load_qa_dataset
from orqa_realm.encode.rerank import score_pairs
from orqa_realm.index.bm25 import BM25Searcher
from orqa_realm.index.rerank import rerank
from orqa_realm.modeling import partitioning
from orqa_realm.modeling.cross_encoder import CrossEncoderConfig
from orqa_realm.tasks.base import TaskContext
from orqa_realm.tasks.common import StoreAndBert
from orqa_realm.tasks.cross_encoder import CrossEncoderTask, CrossEncoderTaskConfig
from orqa_realm.tasks.pairs import TrainingPairs
from orqa_realm.training import loop


def main(store_dir: str, minilm_dir: str, qa_dataset: str, workdir: str) -> dict[str, float]:
  store = BlockStore(store_dir)
  task = CrossEncoderTask(
      CrossEncoderTaskConfig(
          source=StoreAndBert(block_store=store_dir, bert=minilm_dir),
          cross_encoder=CrossEncoderConfig(pooling="cls", query_length=32, max_length=192),
          pairs=TrainingPairs(qa_dataset=qa_dataset, negative_depth=20),
          negatives_per_query=3),
      TaskContext(batch_size=4, seed=0, dtype="float32", remat="none"))
  task.examples, task.query_ids = task.examples[:16], task.query_ids[:16]
  questions = load_qa_dataset(qa_dataset)
  examples = [next(q for q in questions if q.question == e.question) for e in task.examples]
  first_stage = BM25Searcher.build(store).search_texts([e.question for e in examples], 10)
  mesh = parallel.make_mesh()

  def reranked_recall_at_1(params) -> float:
    scores = score_pairs(params, task.config.cross_encoder, store, task.query_ids,
                         first_stage.ids, mesh=mesh)
    return float(answer_hits(rerank(first_stage, scores).ids, store, examples)[:, 0].mean())

  before = reranked_recall_at_1(partitioning.unbox(task.init_params(jax.random.key(0))))
  state = loop.train(task, loop.TrainConfig(
      workdir=workdir, num_train_steps=40, batch_size=4, learning_rate=1e-4,
      warmup_steps=4, checkpoint_every_steps=40, async_checkpoints=False))
  return dict(before=before, after=reranked_recall_at_1(state.params),
              bm25=float(answer_hits(first_stage.ids, store, examples)[:, 0].mean()))


if __name__ == "__main__":
  print(json.dumps(main(*sys.argv[1:])))

"""Run in a subprocess with 4 simulated CPU devices: the ORQA loss and gradients on a 4-device
mesh == on 1 device, for the same retrieved batch.

Prints one JSON line with the largest differences found; the test asserts on them.
"""

import json
import sys

import jax
import numpy as np

from orqa_realm.core import parallel
from orqa_realm.data.reader_inputs import enumerate_spans
from orqa_realm.tasks.base import StepContext
from tests.tasks.sharding import loss_and_grads
from tests.tasks.tiny_orqa import tiny_index_dir, tiny_orqa_task


def main(block_store, bert_dir, workdir):
  assert jax.device_count() == 4, jax.devices()
  one, four = parallel.make_mesh(jax.devices()[:1]), parallel.make_mesh()
  task = tiny_orqa_task(block_store, bert_dir, tiny_index_dir(workdir))
  params = task.init_params(jax.random.key(0))
  # The batch retrieved on each mesh must be the same, and so must its loss and gradients.
  batch_one = task.train_batch(
      0, StepContext(one, params=jax.device_put(params, parallel.replicated(one))))
  batch_four = task.train_batch(
      0, StepContext(four, params=jax.device_put(params, parallel.replicated(four))))
  # The blocks read and every label must agree; the order of near-tied blocks further down the
  # top c may not (the query embeddings differ in rounding between meshes).
  k = batch_one.block_mask.shape[1]
  reader_parts = lambda batch: jax.tree.leaves(jax.device_get(
      (batch.block_ids[:, :k], batch.reader_inputs, batch.block_mask, batch.span_is_answer,
       np.sum(batch.block_has_answer, axis=1))))
  same_reader_batch = all(np.array_equal(a, b)
                          for a, b in zip(reader_parts(batch_one), reader_parts(batch_four)))
  # A random tiny retriever rarely puts an answer in its top 2 blocks: give each question one
  # or two correct spans, so that the full loss is exercised too.
  span_is_answer = np.array(batch_one.span_is_answer)
  spans = enumerate_spans(batch_one.block_mask.shape[-1], task.config.reader.max_span_width)
  for question in range(span_is_answer.shape[0]):
    valid = np.flatnonzero(batch_one.block_mask[question, 0][spans.starts]
                           & batch_one.block_mask[question, 0][spans.ends])
    span_is_answer[question, 0, valid[:1 + question % 2]] = True
  batch_one = batch_one._replace(span_is_answer=span_is_answer)
  loss_one, metrics_one, grads_one = loss_and_grads(task, params, batch_one, one)
  loss_four, metrics_four, grads_four = loss_and_grads(task, params, batch_one, four)
  grad_scale = float(np.sqrt(sum(np.sum(g ** 2) for g in jax.tree.leaves(grads_one))))
  grad_difference = max(float(np.abs(a - b).max())
                        for a, b in zip(jax.tree.leaves(grads_one), jax.tree.leaves(grads_four)))
  print(json.dumps(dict(
      same_reader_batch=same_reader_batch, loss_one=loss_one, loss_four=loss_four, grad_scale=grad_scale,
      grad_difference=grad_difference,
      early_loss_one=float(metrics_one["early_loss"]), full_loss_one=float(metrics_one["full_loss"]),
      reader_has_answer=float(metrics_one["reader_has_answer"]),
      early_has_answer=float(metrics_one["early_has_answer"]))))


if __name__ == "__main__":
  main(*sys.argv[1:])

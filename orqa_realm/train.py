"""The training loop every objective plugs into.

    python -m orqa_realm.train --flagfile=configs/ict_demo.cfg

A task (`--task`, see `TASKS`) provides parameters, the global batch of each step and a loss; this
module owns the rest: the ("data",) mesh over all devices, the jitted step (batch sharded, params
replicated, state donated), AdamW with linear warmup and decay and gradient clipping, orbax
checkpoints (async, keep-N, automatic resume from --workdir, save on SIGTERM), evaluation every N
steps, and metrics to stdout, `workdir/metrics.jsonl` and TensorBoard (`workdir/tensorboard`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
import tqdm
from absl import app, flags, logging

from orqa_realm.core import checkpoints, parallel
from orqa_realm.data.blocks import BlockStore
from orqa_realm.core.errors import InputError
from orqa_realm.encode import refresher
from orqa_realm.index.handle import IndexHandle, LoadedIndex
from orqa_realm.tasks import retriever_flags
from orqa_realm.tasks.ance import ANCETask
from orqa_realm.tasks.base import Task
from orqa_realm.tasks.dpr import DPRTask
from orqa_realm.tasks.ict import ICTTask
from orqa_realm.tasks.orqa import ORQATask
from orqa_realm.tasks.realm import REALMTask

# name -> a constructor from flags: (batch_size, seed, dtype, remat) -> Task
TASKS: dict[str, Callable[..., Task]] = {
    "ance": ANCETask.from_flags,
    "dpr": DPRTask.from_flags,
    "ict": ICTTask.from_flags,
    "orqa": ORQATask.from_flags,
    "realm": REALMTask.from_flags,
}

_TASK = flags.DEFINE_enum("task", "ict", sorted(TASKS), "The training objective.")
_NUM_TRAIN_STEPS = flags.DEFINE_integer("num_train_steps", 1000, "Optimizer steps.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 32, "Global batch size (over all devices and hosts); ICT and DPR negatives "
    "come from the whole global batch.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-4, "Peak learning rate.")
_WARMUP_STEPS = flags.DEFINE_integer(
    "warmup_steps", -1, "Linear warmup steps; -1: ORQA's min(10000, max(100, steps / 10)).")
_WEIGHT_DECAY = flags.DEFINE_float(
    "weight_decay", 0.01, "AdamW decoupled weight decay (not on LayerNorm parameters or biases).")
_MAX_GRAD_NORM = flags.DEFINE_float("max_grad_norm", 1.0, "Clip gradients to this global norm.")
_DTYPE = flags.DEFINE_enum(
    "dtype", "float32", ["float32", "bfloat16"],
    "Matmul compute dtype; bfloat16 accumulates in float32. Parameters stay float32.")
_REMAT = flags.DEFINE_bool("remat", False, "Recompute each BERT layer in the backward pass.")
_SEED = flags.DEFINE_integer("seed", 0, "Seeds initialisation, dropout and the data order.")
_CHECKPOINT_EVERY_STEPS = flags.DEFINE_integer("checkpoint_every_steps", 500, "Save interval.")
_KEEP_CHECKPOINTS = flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept on disk.")
_LOG_EVERY_STEPS = flags.DEFINE_integer("log_every_steps", 10, "Metrics logging interval.")
_EVAL_EVERY_STEPS = flags.DEFINE_integer(
    "eval_every_steps", 0, "Evaluation interval on the task's held-out batches; 0: at the end only.")
# Orbax logs every checkpoint step at INFO; keep the console to our metrics (--verbosity=0 shows it).
flags.FLAGS.set_default("verbosity", logging.converter.ABSL_WARNING)

_REFRESH_INDEX = flags.DEFINE_bool(
    "refresh_index", False, "Run the index refresher as a thread of the trainer: each committed "
    "checkpoint is embedded and published under --index_dir; the index version in use and its "
    "staleness are logged. (Or run `python -m orqa_realm.refresh` on other devices.)")
_REFRESH_EVERY_STEPS = flags.DEFINE_integer(
    "refresh_every_steps", 0, "Also checkpoint every N steps so that the refresher has a new "
    "checkpoint to index that often; 0: checkpoints only every --checkpoint_every_steps.")
REFRESH_POLL_SECONDS = flags.DEFINE_float(
    "refresh_poll_seconds", 10.0, "How often the refresher and the index handle re-read the "
    "checkpoint directory and the index pointer when nothing woke them.")
_INDEX_WAIT_SECONDS = flags.DEFINE_float(
    "index_wait_seconds", 3600.0, "How long a task that mines batches from the refreshed index "
    "(ANCE) waits at start-up for its first version before giving up.")

_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Call jax.distributed.initialize() (TPU pods, multi-node GPU).")


@dataclasses.dataclass(frozen=True)
class TrainOptions:
  """Everything about a run that is not the task."""
  workdir: str
  num_train_steps: int
  batch_size: int
  learning_rate: float = 1e-4
  warmup_steps: int = -1
  weight_decay: float = 0.01
  max_grad_norm: float = 1.0
  seed: int = 0
  checkpoint_every_steps: int = 500
  keep_checkpoints: int = 3
  log_every_steps: int = 10
  eval_every_steps: int = 0
  refresh_every_steps: int = 0
  async_checkpoints: bool = True
  index_wait_seconds: float = 3600.0


class TrainState(NamedTuple):
  step: jax.Array  # [] int32, optimizer steps completed
  params: Any
  opt_state: Any


def default_warmup_steps(num_train_steps: int) -> int:
  """ORQA's warmup: min(10000, max(100, num_train_steps / 10))."""
  return min(10000, max(100, num_train_steps // 10))


def learning_rate_schedule(options: TrainOptions) -> optax.Schedule:
  """Linear warmup to the peak, then linear decay to zero at the last step."""
  warmup = (default_warmup_steps(options.num_train_steps) if options.warmup_steps < 0
            else options.warmup_steps)
  warmup = min(warmup, options.num_train_steps)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, options.learning_rate, max(warmup, 1)),
       optax.linear_schedule(options.learning_rate, 0.0,
                             max(options.num_train_steps - warmup, 1))],
      boundaries=[warmup])


def weight_decay_mask(params: Any) -> Any:
  """Decay matrices (kernels, embeddings), as BERT does; not LayerNorm scales or biases."""
  return jax.tree.map(lambda leaf: jnp.ndim(leaf) >= 2, params)


def make_optimizer(options: TrainOptions) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(options.max_grad_norm),
      optax.adamw(learning_rate_schedule(options), b1=0.9, b2=0.999, eps=1e-6,
                  weight_decay=options.weight_decay, mask=weight_decay_mask))


class MetricsLog:
  """Metrics to `metrics.jsonl` and TensorBoard (first host only)."""

  def __init__(self, workdir: str, resumed_step: int):
    self._enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    if not self._enabled:
      return
    if os.path.isfile(self.path):
      # Steps past the checkpoint we resume from will be run (and logged) again.
      with open(self.path, encoding="utf-8") as f:
        kept = [line for line in f if json.loads(line)["step"] <= resumed_step]
      with open(self.path, "w", encoding="utf-8") as f:
        f.writelines(kept)
    from tensorboardX import SummaryWriter

    self._writer = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self._enabled:
      return
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps({"step": step, **metrics}) + "\n")
    for name, value in metrics.items():
      self._writer.add_scalar(name, value, step)
    self._writer.flush()

  def close(self) -> None:
    if self._enabled:
      self._writer.close()


class StopOnSigterm:
  """Records a SIGTERM (preemption) so that the loop can checkpoint and exit cleanly."""

  def __init__(self):
    self.requested = False

  def __enter__(self):
    self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc_info):
    signal.signal(signal.SIGTERM, self._previous)


def _format(metrics: dict[str, float]) -> str:
  return " ".join(f"{name}={value:.4g}" for name, value in metrics.items())


def make_train_step(task: Task, optimizer: optax.GradientTransformation, schedule: optax.Schedule,
                    dropout_key: jax.Array) -> Callable[[TrainState, Any], tuple[TrainState, dict]]:
  """One optimizer step on a global batch: (state, batch) -> (new state, metrics)."""

  def train_step(state: TrainState, batch) -> tuple[TrainState, dict[str, jax.Array]]:
    rng = jax.random.fold_in(dropout_key, state.step)
    loss_fn = functools.partial(task.loss, rng=rng, deterministic=False)
    (_, metrics), grads = jax.value_and_grad(
        lambda params: loss_fn(params, batch), has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, learning_rate=schedule(state.step), grad_norm=optax.global_norm(grads))
    return TrainState(state.step + 1, params, opt_state), metrics

  return train_step


def _index_metrics(index: LoadedIndex | None, step: int) -> dict[str, float]:
  """Which index version training sees, and how many steps older its checkpoint is."""
  if index is None:
    return {}
  metrics = {"index_version": float(index.version.version)}
  if index.version.checkpoint_step is not None:
    metrics["index_staleness_steps"] = float(step - index.version.checkpoint_step)
  return metrics


def wait_for_first_index(task: Task, index_handle: IndexHandle | None,
                         checkpointer: checkpoints.Checkpointer, state: TrainState,
                         latest_checkpoint: int | None, timeout: float) -> None:
  """Blocks until `index_handle` has a version for a task that mines batches from it. A fresh
  run first saves checkpoint 0, so that the refresher indexes the initial model."""
  if index_handle is None:
    raise InputError(f"--task={task.name} mines its batches from the refreshed index of the "
                     "model being trained: pass --refresh_index and --index_dir (or run "
                     "python -m orqa_realm.refresh beside it)")
  if latest_checkpoint is None:
    checkpointer.save(0, state, force=True)
  index_handle.wait_for_version(timeout)


def train(task: Task, options: TrainOptions, *, mesh=None, flags_text: str = "",
          on_checkpoint_commit: Callable[[], None] | None = None,
          index_handle: IndexHandle | None = None) -> TrainState:
  """Trains `task` until options.num_train_steps, resuming from the workdir's last checkpoint.

  `on_checkpoint_commit` is called whenever a checkpoint is complete on disk (the in-process
  refresher's wake-up); `index_handle`'s newest loaded version is taken between steps and its
  version and staleness logged.
  """
  mesh = mesh if mesh is not None else parallel.make_mesh()
  parallel.check_batch_size(options.batch_size, mesh)
  checkpoints.check_or_save_model_config(options.workdir, task.model_config())
  if flags_text:
    checkpoints.save_flags(options.workdir, flags_text)
  replicated, batch_sharding = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  optimizer = make_optimizer(options)
  schedule = learning_rate_schedule(options)

  init_rng = jax.random.key(options.seed)

  def state_from(params) -> TrainState:
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))

  checkpointer = checkpoints.Checkpointer(
      options.workdir, save_every_steps=options.checkpoint_every_steps,
      keep=options.keep_checkpoints, async_save=options.async_checkpoints,
      on_commit=on_checkpoint_commit)
  latest = checkpointer.latest_step()
  if latest is None:
    params = jax.device_put(task.warm_start(task.init_params(init_rng)), replicated)
    state = jax.jit(state_from, out_shardings=replicated)(params)
  else:
    # A restore needs only shapes and shardings: nothing is initialised on the devices.
    shapes = jax.eval_shape(lambda: state_from(task.init_params(init_rng)))
    state = checkpointer.restore(latest, checkpoints.abstract_with_sharding(shapes, replicated))
    if jax.process_index() == 0:
      print(f"resumed from checkpoint {latest} in {checkpointer.directory}", flush=True)
  start_step = int(state.step)
  if task.needs_index:
    wait_for_first_index(task, index_handle, checkpointer, state, latest,
                         options.index_wait_seconds)

  dropout_key = jax.random.fold_in(jax.random.key(options.seed), 1)
  train_step = jax.jit(make_train_step(task, optimizer, schedule, dropout_key),
                       in_shardings=(replicated, batch_sharding),
                       out_shardings=(replicated, replicated), donate_argnums=(0,))
  eval_step = jax.jit(lambda params, batch: task.loss(params, batch, dropout_key, True)[1],
                      in_shardings=(replicated, batch_sharding), out_shardings=replicated)

  def evaluate(params) -> dict[str, float]:
    totals, count = {}, 0
    for batch in task.eval_batches():
      for name, value in jax.device_get(eval_step(params, parallel.to_global(batch, mesh))).items():
        totals[name] = totals.get(name, 0.0) + float(value)
      count += 1
    metrics = {name: total / count for name, total in totals.items()}
    metrics.update(task.evaluate(params, mesh))
    return {f"eval_{name}": value for name, value in metrics.items()}

  log = MetricsLog(options.workdir, start_step)
  progress = tqdm.tqdm(initial=start_step, total=options.num_train_steps, unit="step",
                       disable=not sys.stderr.isatty() or jax.process_index() != 0)

  def evaluate_and_log(params, step: int) -> None:
    evaluation = evaluate(params)
    if evaluation:
      log.write(step, evaluation)
      progress.write(f"step {step}: {_format(evaluation)}")

  if start_step == 0 and options.eval_every_steps:
    # The initial model's metrics: the baseline that training should improve on.
    evaluate_and_log(state.params, 0)
  # Throughput counts training only: time spent evaluating and saving is taken out of the window.
  window_start, window_steps, window_pauses = time.perf_counter(), 0, 0.0
  with StopOnSigterm() as stop:
    for step in range(start_step, options.num_train_steps):
      index = index_handle.current() if index_handle is not None else None
      batch = parallel.to_global(task.train_batch(step, state.params, mesh, index), mesh)
      state, metrics = train_step(state, batch)
      completed = step + 1
      window_steps += 1
      progress.update(1)
      final = completed == options.num_train_steps
      if completed % options.log_every_steps == 0 or final:
        values = {name: float(value) for name, value in jax.device_get(metrics).items()}
        elapsed = time.perf_counter() - window_start - window_pauses
        values["examples_per_second"] = window_steps * options.batch_size / elapsed
        values.update(_index_metrics(index, completed))
        log.write(completed, values)
        progress.write(f"step {completed}/{options.num_train_steps}: {_format(values)}")
        window_start, window_steps, window_pauses = time.perf_counter(), 0, 0.0
      paused = time.perf_counter()
      if (options.eval_every_steps and completed % options.eval_every_steps == 0) or final:
        evaluate_and_log(state.params, completed)
      refresh_due = bool(options.refresh_every_steps) and completed % options.refresh_every_steps == 0
      checkpointer.save(completed, state, force=final or stop.requested or refresh_due)
      window_pauses += time.perf_counter() - paused
      if stop.requested:
        progress.write(f"SIGTERM: saved checkpoint {completed}, stopping")
        break
  checkpointer.wait()
  checkpointer.close()
  progress.close()
  log.close()
  return state


def main(argv):
  del argv
  if _MULTIHOST.value:
    parallel.initialize_multihost()
  if not checkpoints.WORKDIR.value:
    sys.exit("error: --workdir is required")
  options = TrainOptions(
      workdir=checkpoints.WORKDIR.value, num_train_steps=_NUM_TRAIN_STEPS.value,
      batch_size=_BATCH_SIZE.value, learning_rate=_LEARNING_RATE.value,
      warmup_steps=_WARMUP_STEPS.value, weight_decay=_WEIGHT_DECAY.value,
      max_grad_norm=_MAX_GRAD_NORM.value, seed=_SEED.value,
      checkpoint_every_steps=_CHECKPOINT_EVERY_STEPS.value,
      keep_checkpoints=_KEEP_CHECKPOINTS.value, log_every_steps=_LOG_EVERY_STEPS.value,
      eval_every_steps=_EVAL_EVERY_STEPS.value, refresh_every_steps=_REFRESH_EVERY_STEPS.value,
      index_wait_seconds=_INDEX_WAIT_SECONDS.value)
  refresher_thread, index_handle = None, None
  try:
    task = TASKS[_TASK.value](batch_size=options.batch_size, seed=options.seed,
                              dtype=jnp.dtype(_DTYPE.value), remat=_REMAT.value)
    print(f"task {_TASK.value} on {jax.device_count()} {jax.devices()[0].platform} device(s), "
          f"{jax.process_count()} host(s); global batch {options.batch_size}", flush=True)
    if _REFRESH_INDEX.value:
      worker = refresher.refresher_from_flags(options.workdir, task.model_config())
      # Given the store, the handle refuses versions built from another corpus (e.g. by a
      # refresher process started with other flags).
      index_handle = refresher.handle_from_flags(worker.store,
                                                 poll_seconds=REFRESH_POLL_SECONDS.value)
      worker.on_publish = lambda version: index_handle.notify()
      refresher_thread = refresher.RefresherThread(
          worker, poll_seconds=REFRESH_POLL_SECONDS.value).start()
    elif task.needs_index:
      # A refresher process elsewhere publishes the versions; this run only reads them.
      index_handle = refresher.handle_from_flags(BlockStore(retriever_flags.BLOCK_STORE.value),
                                                 poll_seconds=REFRESH_POLL_SECONDS.value)
    train(task, options, flags_text=flags.FLAGS.flags_into_string(),
          on_checkpoint_commit=refresher_thread.notify if refresher_thread else None,
          index_handle=index_handle)
  except InputError as e:
    sys.exit(f"error: {e}")
  finally:
    if refresher_thread is not None:
      refresher_thread.close()
    if index_handle is not None:
      index_handle.close()


if __name__ == "__main__":
  app.run(main)

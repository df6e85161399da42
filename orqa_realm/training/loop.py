"""The training loop every objective plugs into.

A task (`orqa_realm.tasks`) provides parameters, the global batch of each step and a loss; the
loop owns the rest: the ("data", "fsdp") mesh over all devices, the jitted step (batch split
over every device, parameters and Adam moments split over "fsdp" by their logical axes, state
donated), AdamW with linear warmup and decay and gradient clipping, orbax
checkpoints (async, keep-N, automatic resume from the workdir, save on SIGTERM), evaluation every
N steps, metrics to stdout, `workdir/metrics.jsonl` and TensorBoard (`workdir/tensorboard`), and
the run's description (`run.json`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from jax.experimental import multihost_utils

from orqa_realm.core import checkpoints, parallel, paths, run_directory
from orqa_realm.core.config import nested, setting
from orqa_realm.core.errors import InputError
from orqa_realm.encode.refresher import RefresherConfig
from orqa_realm.index.handle import IndexHandle, LoadedIndex
from orqa_realm.modeling import partitioning
from orqa_realm.modeling.bert import RematPolicy
from orqa_realm.tasks.base import Need, StepContext, Task, TaskContext
from orqa_realm.training.metrics_log import MetricsLog


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything about a run that is not the task."""
  workdir: str = setting(
      "", "Run directory: run.json, checkpoints, flags, metrics (a local path or a gs:// URI). "
      "Training resumes from it; embedding, refreshing and evaluation read its checkpoints.")
  num_train_steps: int = setting(1000, "Optimizer steps.")
  batch_size: int = setting(
      32, "Global batch size (over all devices and hosts); ICT and DPR negatives come from the "
      "whole global batch.")
  learning_rate: float = setting(1e-4, "Peak learning rate.")
  warmup_steps: int = setting(
      -1, "Linear warmup steps; -1: ORQA's min(10000, max(100, steps / 10)).")
  weight_decay: float = setting(
      0.01, "AdamW decoupled weight decay (not on LayerNorm parameters or biases).")
  max_grad_norm: float = setting(1.0, "Clip gradients to this global norm.")
  learning_rate_multipliers: tuple[str, ...] = setting(
      (), "REGEX=FACTOR,...: a parameter whose path ('/'-joined, e.g. codes, "
      "projection/kernel, bert/...) matches REGEX (re.search; the first pair that matches) "
      "trains at FACTOR x the learning rate, its weight decay scaled alike; the others at 1x. "
      "Fresh heads over a pretrained encoder otherwise move at the encoder's fine-tuning rate. "
      "A REGEX that matches no parameter is refused.")
  frozen_parameters: tuple[str, ...] = setting(
      (), "REGEX,...: parameters whose path matches one of them are not trained (bitwise "
      "unchanged, no Adam moments kept, left out of the clipped gradient norm), e.g. a frozen "
      "block tower or knowledge encoder. A REGEX that matches no parameter is refused; the "
      "optimizer state depends on them, so a run resumes only with the same ones.")
  grad_accum_steps: int = setting(
      1, "Micro-batches each optimizer step's global batch is split into (each of "
      "--batch_size / N examples), their gradients accumulated: the gradient of the whole "
      "batch in the memory of one micro-batch. Only for tasks whose loss averages over "
      "examples or tokens; in-batch negatives need --grad_cache_chunk instead.")
  seed: int = setting(0, "Seeds initialisation, dropout and the data order.")
  dtype: Literal["float32", "bfloat16"] = setting(
      "float32", "Matmul compute dtype; bfloat16 accumulates in float32. Parameters stay "
      "float32.")
  remat: RematPolicy = setting(
      "none", "What each BERT layer keeps for its backward pass, the rest being recomputed: "
      "none (everything), full (only its input), minimal (also its matmuls with weights), dots "
      "(every matmul, attention's too).")
  mesh_shape: str = setting(
      "", "Device mesh as data:N,fsdp:M (an axis left out or -1 takes the remaining devices). "
      "fsdp > 1 splits parameters and Adam moments over that many devices (fully sharded data "
      "parallelism); the batch is split over all. Default: every device on data.")
  checkpoint_every_steps: int = setting(500, "Save interval.")
  keep_checkpoints: int = setting(3, "Checkpoints kept on disk.")
  log_every_steps: int = setting(10, "Metrics logging interval.")
  eval_every_steps: int = setting(
      0, "Evaluation interval on the task's held-out data; 0: at the end only.")
  multihost: bool = setting(
      False, "Call jax.distributed.initialize() (TPU pods, multi-node GPU clusters).")
  async_checkpoints: bool = True

  def task_context(self) -> TaskContext:
    return TaskContext(self.batch_size, self.seed, self.dtype, self.remat)

  def mesh(self) -> jax.sharding.Mesh:
    """The mesh of all devices of all hosts, shaped by `mesh_shape`."""
    try:
      return parallel.make_mesh(shape=self.mesh_shape)
    except ValueError as e:
      raise InputError(str(e), field="mesh_shape") from e


@dataclasses.dataclass(frozen=True)
class RefreshConfig:
  """The index refresher beside training (the tasks that mine the refreshed index need one)."""
  refresh_every_steps: int = setting(
      0, "Also checkpoint every N steps so that the refresher has a new checkpoint to index "
      "that often; 0: checkpoints only every --checkpoint_every_steps.")
  index_wait_seconds: float = setting(
      3600.0, "How long a task that mines batches from the refreshed index waits at start-up "
      "for its first version before giving up.")
  refresher: RefresherConfig = nested(RefresherConfig())


class TrainState(NamedTuple):
  step: jax.Array  # [] int32, optimizer steps completed
  params: Any
  opt_state: Any


class StatefulTrainState(NamedTuple):
  """The train state of a task that carries state between steps (`Task.init_task_state`).

  Its own type rather than a field added to `TrainState`: checkpoints store the tree's
  structure, and every run saved before would stop restoring if `TrainState` grew one."""
  step: jax.Array
  params: Any
  opt_state: Any
  task_state: Any


def default_warmup_steps(num_train_steps: int) -> int:
  """ORQA's warmup: min(10000, max(100, num_train_steps / 10))."""
  return min(10000, max(100, num_train_steps // 10))


def learning_rate_schedule(config: TrainConfig) -> optax.Schedule:
  """Linear warmup to the peak, then linear decay to zero at the last step."""
  warmup = (default_warmup_steps(config.num_train_steps) if config.warmup_steps < 0
            else config.warmup_steps)
  warmup = min(warmup, config.num_train_steps)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, config.learning_rate, max(warmup, 1)),
       optax.linear_schedule(config.learning_rate, 0.0,
                             max(config.num_train_steps - warmup, 1))],
      boundaries=[warmup])


def frozen_patterns(config: TrainConfig) -> list[re.Pattern]:
  """`config.frozen_parameters` compiled."""
  patterns = []
  for rule in config.frozen_parameters:
    try:
      patterns.append(re.compile(rule))
    except re.error as e:
      raise InputError(f"{rule!r} is not a regular expression: {e}",
                       field="frozen_parameters") from e
  return patterns


DECAYED_PARAMETERS = ("kernel", "embedding")


class LearningRateMultiplier(NamedTuple):
  pattern: re.Pattern
  factor: float


def learning_rate_multipliers(config: TrainConfig) -> list[LearningRateMultiplier]:
  """`config.learning_rate_multipliers` parsed, each REGEX compiled and FACTOR positive."""
  parsed = []
  for rule in config.learning_rate_multipliers:
    pattern, equals, factor = rule.rpartition("=")
    try:
      parsed.append(LearningRateMultiplier(re.compile(pattern), float(factor)))
    except (re.error, ValueError) as e:
      raise InputError(f"{rule!r} is not REGEX=FACTOR: {e}",
                       field="learning_rate_multipliers") from e
    if not equals or not pattern or parsed[-1].factor <= 0:
      raise InputError(f"{rule!r} is not REGEX=FACTOR with a non-empty REGEX and FACTOR > 0",
                       field="learning_rate_multipliers")
  return parsed


def parameter_name(path) -> str:
  """A parameter's tree path as 'module/.../name'."""
  return "/".join(str(getattr(key, "key", key)) for key in path)


def multiplier_of(name: str, multipliers: list[LearningRateMultiplier]) -> float:
  """The factor of the first rule matching parameter `name`; 1 if none does."""
  return next((rule.factor for rule in multipliers if rule.pattern.search(name)), 1.0)


def check_patterns_match(params: Any, patterns: list[re.Pattern], field: str) -> None:
  """Refuses a pattern that matches no parameter (a misspelt path would silently do nothing)."""
  names = [parameter_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  for pattern in patterns:
    if not any(pattern.search(name) for name in names):
      raise InputError(f"{pattern.pattern!r} matches no parameter of this task (e.g. "
                       f"{', '.join(names[:4])})", field=field)


def scale_by_parameter_multiplier(multipliers: list[LearningRateMultiplier]
                                  ) -> optax.GradientTransformation:
  """Multiplies each parameter's update by its rule's factor: after AdamW, the same as that
  parameter's learning rate (and its decoupled weight decay) scaled by it."""

  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map_with_path(
        lambda path, u: u * multiplier_of(parameter_name(path), multipliers), updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def weight_decay_mask(params: Any) -> Any:
  """Decay matrices (kernels, embeddings), as BERT does; not LayerNorm scales or biases. By
  name, since a scanned BERT's stacked biases have two axes too."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) in DECAYED_PARAMETERS, params)


def frozen_mask(params: Any, patterns: list[re.Pattern]) -> Any:
  """A tree like `params`: True where a parameter's path matches one of `patterns`."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: any(pattern.search(parameter_name(path)) for pattern in patterns), params)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
  """Clipping, AdamW on the schedule, per-parameter multipliers; frozen parameters (with
  `--frozen_parameters`) routed by `optax.multi_transform` to zero updates and no state."""
  trained = trained_optimizer(config)
  frozen = frozen_patterns(config)
  if not frozen:
    return trained
  labels = lambda params: jax.tree.map(lambda is_frozen: "frozen" if is_frozen else "trained",
                                       frozen_mask(params, frozen))
  return optax.multi_transform({"trained": trained, "frozen": optax.set_to_zero()}, labels)


def trained_optimizer(config: TrainConfig) -> optax.GradientTransformation:
  """What updates the parameters that train: clipping, AdamW, multipliers."""
  transforms = [
      optax.clip_by_global_norm(config.max_grad_norm),
      optax.adamw(learning_rate_schedule(config), b1=0.9, b2=0.999, eps=1e-6,
                  weight_decay=config.weight_decay, mask=weight_decay_mask)]
  multipliers = learning_rate_multipliers(config)
  if multipliers:
    transforms.append(scale_by_parameter_multiplier(multipliers))
  return optax.chain(*transforms)


class OneStepInFlight:
  """Bounds how far the loop runs ahead of the device. A jitted step returns as soon as it is
  queued, so a loop that only waits at its logs queues every step up to the next one and reads
  a SIGTERM there (minutes, at 20 s a step). Waiting for the step before the newest keeps one
  step in flight, its successor's batch built while it runs."""

  def __init__(self):
    self._previous = None

  def add(self, outputs: Any) -> None:
    """Takes the newest step's outputs; returns once the step before it has finished."""
    if self._previous is not None:
      jax.block_until_ready(self._previous)
    self._previous = outputs


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


def train_state_shardings(optimizer: optax.GradientTransformation, params: Any,
                          param_shardings: Any, mesh,
                          task_state: Any = None) -> TrainState | StatefulTrainState:
  """Where each part of the train state lives: the parameters and every optimizer state that
  mirrors them (Adam's moments) as `param_shardings`; the step and counters replicated. A
  frozen parameter's place in a trained group's state (`optax.MaskedNode`) stays empty. A task
  state (its shapes, `task_state`) is replicated."""
  replicated = parallel.replicated(mesh)
  opt_state = jax.eval_shape(optimizer.init, params)
  masked = lambda node: isinstance(node, optax.MaskedNode)
  state = TrainState(replicated, param_shardings, optax.tree_map_params(
      optimizer, lambda value, sharding: value if masked(value) else sharding, opt_state,
      param_shardings, transform_non_params=lambda _: replicated, is_leaf=masked))
  if task_state is None:
    return state
  return StatefulTrainState(*state, jax.tree.map(lambda _: replicated, task_state))


def _format(metrics: dict[str, float]) -> str:
  return " ".join(f"{name}={value:.4g}" for name, value in metrics.items())


def check_accumulation(task: Task, config: TrainConfig, mesh) -> None:
  """Refuses gradient accumulation for a task whose loss couples its batch's examples, or a
  global batch that does not deal evenly into micro-batches over the devices."""
  steps = config.grad_accum_steps
  if steps < 1:
    raise InputError(f"must be at least 1, not {steps}", field="grad_accum_steps")
  if steps == 1:
    return
  if not task.accumulates_gradients:
    raise InputError(
        f"--task={task.name}'s loss is not a mean over independent examples (in-batch "
        "negatives, or a batch-wide statistic): a micro-batch would change it. For in-batch "
        "negatives, GradCache (--grad_cache_chunk, DPR and the tasks built on it) gives the "
        "whole batch's loss in less memory",
        field="grad_accum_steps")
  if config.batch_size % (steps * mesh.size):
    raise InputError(f"--batch_size={config.batch_size} does not split into {steps} "
                     f"micro-batches over {mesh.size} device(s)", field="grad_accum_steps")


def micro_batches(batch: Any, count: int, sharding: jax.sharding.Sharding | None = None) -> Any:
  """The global batch's rows dealt into `count` micro-batches, [rows, ...] -> [count,
  rows / count, ...]: micro-batch i takes rows i, i + count, ..., so that every device, whose
  rows of the batch are contiguous, holds an equal share of each (placed by `sharding`)."""

  def deal(x):
    dealt = jnp.swapaxes(x.reshape(x.shape[0] // count, count, *x.shape[1:]), 0, 1)
    return dealt if sharding is None else jax.lax.with_sharding_constraint(dealt, sharding)

  return jax.tree.map(deal, batch)


def hold_frozen(params: Any, frozen: Any) -> Any:
  """`params` with those `frozen` marks (a tree of bools like it, or None) under
  `stop_gradient`."""
  if frozen is None:
    return params
  return jax.tree.map(lambda value, is_frozen: (jax.lax.stop_gradient(value) if is_frozen
                                                else value), params, frozen)


def batch_gradients(task: Task, params: Any, batch: Any, rng: jax.Array,
                    grad_accum_steps: int = 1, mesh=None,
                    frozen: Any = None) -> tuple[jax.Array, dict, Any]:
  """(loss, metrics, gradients) of `task.loss` on a global batch, dropout on (traceable).

  `frozen` (a tree of bools like `params`, or None): those parameters enter the loss under
  `stop_gradient`, so that their gradients are zero without being computed, nor a backward
  pass through what only they feed (a frozen encoder under a trained head).

  With `grad_accum_steps` > 1 the batch is dealt into that many micro-batches
  (`micro_batches`, each split over `mesh`'s devices), whose losses, metrics and gradients are
  summed under `lax.scan` weighted by `task.loss_weight` (what each micro-batch's loss averages
  over) and divided by the total weight: for a loss that is a mean over examples or tokens,
  the whole batch's loss and gradient in the memory of one micro-batch. Each micro-batch's
  dropout key folds in its index.
  """

  def plain(batch, rng):
    loss_fn = functools.partial(task.loss, rng=rng, deterministic=False)
    (loss, metrics), grads = jax.value_and_grad(lambda p: loss_fn(hold_frozen(p, frozen), batch),
                                                has_aux=True)(params)
    return loss, metrics, grads

  if grad_accum_steps == 1:
    return plain(batch, rng)
  sharding = (None if mesh is None else jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(None, parallel.BATCH_AXES)))

  def add(summed_grads, indexed):
    index, micro_batch = indexed
    loss, metrics, grads = plain(micro_batch, jax.random.fold_in(rng, index))
    weight = jnp.asarray(task.loss_weight(micro_batch), jnp.float32)
    summed_grads = jax.tree.map(lambda total, g: total + weight * g, summed_grads, grads)
    return summed_grads, (weight, loss, metrics)

  summed_grads, (weights, losses, metrics) = jax.lax.scan(
      add, jax.tree.map(jnp.zeros_like, params),
      (jnp.arange(grad_accum_steps), micro_batches(batch, grad_accum_steps, sharding)))
  total = jnp.maximum(jnp.sum(weights), jnp.finfo(jnp.float32).tiny)
  mean = lambda values: jnp.sum(weights * values) / total
  return (mean(losses), jax.tree.map(mean, metrics),
          jax.tree.map(lambda g: g / total, summed_grads))


def make_train_step(task: Task, optimizer: optax.GradientTransformation, schedule: optax.Schedule,
                    dropout_key: jax.Array, grad_accum_steps: int = 1, mesh=None,
                    frozen: list[re.Pattern] | None = None
                    ) -> Callable[[TrainState, Any], tuple[TrainState, dict]]:
  """One optimizer step on a global batch: (state, batch) -> (new state, metrics); the
  gradient accumulated over `grad_accum_steps` micro-batches (`batch_gradients`). Parameters
  matching `frozen` get no gradient (`batch_gradients`), so the logged norm is the trained
  ones'."""

  def train_step(state: TrainState | StatefulTrainState,
                 batch) -> tuple[TrainState | StatefulTrainState, dict[str, jax.Array]]:
    rng = jax.random.fold_in(dropout_key, state.step)
    mask = frozen_mask(state.params, frozen) if frozen else None
    if isinstance(state, StatefulTrainState):
      # Refused with accumulation (`check_accumulation`): the state advances once a batch.
      (_, (metrics, task_state)), grads = jax.value_and_grad(
          lambda p: task.stateful_loss(hold_frozen(p, mask), state.task_state, batch, rng),
          has_aux=True)(state.params)
    else:
      _, metrics, grads = batch_gradients(task, state.params, batch, rng, grad_accum_steps,
                                          mesh, mask)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, learning_rate=schedule(state.step), grad_norm=optax.global_norm(grads))
    if isinstance(state, StatefulTrainState):
      return StatefulTrainState(state.step + 1, params, opt_state, task_state), metrics
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


def step_context(task: Task, mesh, rows: slice, params,
                 index: LoadedIndex | None) -> StepContext:
  """What a step's batch may depend on: this host's rows, and what `task` declared it needs."""
  return StepContext(mesh, rows, params=params if Need.PARAMS in task.needs else None,
                     index=index if Need.INDEX in task.needs else None)


def agreed_index(index_handle: IndexHandle) -> LoadedIndex | None:
  """The index version a step uses, the same on every host: the first host's newest loaded
  one, broadcast (hosts load versions at their own pace)."""
  index = index_handle.current()
  if jax.process_count() == 1:
    return index
  version = int(multihost_utils.broadcast_one_to_all(
      np.int32(index.version.version if index is not None else -1)))
  return index_handle.take(version) if version >= 0 else None


def train(task: Task, config: TrainConfig, *, refresh: RefreshConfig = RefreshConfig(),
          mesh=None, settings: dict[str, Any] | None = None, flags_text: str = "",
          on_checkpoint_commit: Callable[[], None] | None = None,
          index_handle: IndexHandle | None = None) -> TrainState:
  """Trains `task` until config.num_train_steps, resuming from the workdir's last checkpoint.

  `settings` (JSON data; default: the task's and the loop's settings) and `flags_text` (the
  flags given) are recorded in the run directory. `on_checkpoint_commit` is called whenever a checkpoint is
  complete on disk (the in-process refresher's wake-up); `index_handle`'s newest loaded version
  is taken between steps and its version and staleness logged.
  """
  if not config.workdir:
    raise InputError("a run needs its directory", field="workdir")
  mesh = mesh if mesh is not None else config.mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  multipliers, frozen = learning_rate_multipliers(config), frozen_patterns(config)
  if multipliers or frozen:
    shapes = partitioning.unbox(jax.eval_shape(task.init_params, jax.random.key(config.seed)))
    check_patterns_match(shapes, [rule.pattern for rule in multipliers],
                         "learning_rate_multipliers")
    check_patterns_match(shapes, frozen, "frozen_parameters")
  check_accumulation(task, config, mesh)
  if settings is None:
    settings = dict(task=dataclasses.asdict(task.config), train=dataclasses.asdict(config))
  paths.check_writable(config.workdir)
  run_directory.start_run(config.workdir, task=task.name, model=task.run_model(),
                          settings=settings, flags_text=flags_text,
                          write=jax.process_index() == 0)
  replicated, batch_sharding = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  optimizer = make_optimizer(config)
  schedule = learning_rate_schedule(config)

  init_rng = jax.random.key(config.seed)

  def state_from(params) -> TrainState | StatefulTrainState:
    state = TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
    task_state = task.init_task_state(params)
    return state if task_state is None else StatefulTrainState(*state, task_state)

  checkpointer = checkpoints.Checkpointer(
      run_directory.checkpoint_dir(config.workdir), save_every_steps=config.checkpoint_every_steps,
      keep=config.keep_checkpoints, async_save=config.async_checkpoints,
      on_commit=on_checkpoint_commit)
  latest = checkpointer.latest_step()
  # The parameters with their logical axes, which say how they are sharded: initialised for a
  # fresh run, only their shapes for a restore (nothing is initialised on the devices).
  boxed = (task.init_params(init_rng) if latest is None
           else jax.eval_shape(task.init_params, init_rng))
  param_shardings = partitioning.param_shardings(boxed, mesh)
  state_shardings = train_state_shardings(
      optimizer, partitioning.unbox(boxed), param_shardings, mesh,
      jax.eval_shape(task.init_task_state, partitioning.unbox(boxed)))
  if latest is None:
    params = task.warm_start(partitioning.unbox(boxed), mesh)
    state = jax.jit(state_from, out_shardings=state_shardings)(
        jax.device_put(params, param_shardings))
  else:
    # A restore needs only shapes and shardings, on whatever mesh this run has now.
    shapes = jax.eval_shape(state_from, partitioning.unbox(boxed))
    try:
      restored = checkpointer.restore_newest(
          checkpoints.abstract_with_sharding(shapes, state_shardings))
    except InputError:
      checkpointer.close()
      raise
    latest, state = restored.step, restored.state
    if jax.process_index() == 0:
      for path in restored.moved_aside:
        print(f"WARNING: a newer checkpoint does not restore; moved it aside to {path}",
              flush=True)
      print(f"resumed from checkpoint {latest} in {checkpointer.directory}", flush=True)
  start_step = int(state.step)
  if Need.INDEX in task.needs:
    wait_for_first_index(task, index_handle, checkpointer, state, latest,
                         refresh.index_wait_seconds)

  dropout_key = jax.random.fold_in(jax.random.key(config.seed), 1)
  train_step = jax.jit(make_train_step(task, optimizer, schedule, dropout_key,
                                       config.grad_accum_steps, mesh, frozen),
                       in_shardings=(state_shardings, batch_sharding),
                       out_shardings=(state_shardings, replicated), donate_argnums=(0,))
  eval_step = jax.jit(lambda params, batch: task.loss(params, batch, dropout_key, True)[1],
                      in_shardings=(param_shardings, batch_sharding), out_shardings=replicated)

  def evaluate(params, index: LoadedIndex | None) -> dict[str, float]:
    totals, count = {}, 0
    for batch in task.eval_batches():
      for name, value in jax.device_get(eval_step(params, parallel.to_global(batch, mesh))).items():
        totals[name] = totals.get(name, 0.0) + float(value)
      count += 1
    metrics = {name: total / count for name, total in totals.items()}
    metrics.update(task.evaluate(params, mesh, index))
    return {f"eval_{name}": value for name, value in metrics.items()}

  log = MetricsLog(config.workdir, start_step)
  progress = tqdm.tqdm(initial=start_step, total=config.num_train_steps, unit="step",
                       disable=not sys.stderr.isatty() or jax.process_index() != 0)

  def evaluate_and_log(params, step: int) -> None:
    index = (agreed_index(index_handle)
             if index_handle is not None and Need.INDEX in task.needs else None)
    evaluation = evaluate(params, index)
    if evaluation:
      log.write(step, evaluation)
      progress.write(f"step {step}: {_format(evaluation)}")

  if start_step == 0 and config.eval_every_steps:
    # The initial model's metrics: the baseline that training should improve on.
    evaluate_and_log(state.params, 0)
  # Throughput counts training only: time spent evaluating and saving is taken out of the window.
  window_start, window_steps, window_pauses = time.perf_counter(), 0, 0.0
  rows = parallel.host_local_rows(config.batch_size)
  in_flight = OneStepInFlight()
  with StopOnSigterm() as stop:
    for step in range(start_step, config.num_train_steps):
      index = agreed_index(index_handle) if index_handle is not None else None
      batch = parallel.global_from_local(
          task.train_batch(step, step_context(task, mesh, rows, state.params, index)), mesh)
      state, metrics = train_step(state, batch)
      in_flight.add(metrics)
      completed = step + 1
      window_steps += 1
      progress.update(1)
      final = completed == config.num_train_steps
      if completed % config.log_every_steps == 0 or final:
        values = {name: float(value) for name, value in jax.device_get(metrics).items()}
        elapsed = time.perf_counter() - window_start - window_pauses
        values["examples_per_second"] = window_steps * config.batch_size / elapsed
        values.update(_index_metrics(index, completed))
        log.write(completed, values)
        progress.write(f"step {completed}/{config.num_train_steps}: {_format(values)}")
        window_start, window_steps, window_pauses = time.perf_counter(), 0, 0.0
      paused = time.perf_counter()
      if (config.eval_every_steps and completed % config.eval_every_steps == 0) or final:
        evaluate_and_log(state.params, completed)
      refresh_due = (bool(refresh.refresh_every_steps)
                     and completed % refresh.refresh_every_steps == 0)
      # Read once: a SIGTERM arriving after the save decided not to save must not be reported
      # (and acted on) as saved; it is handled after the next step.
      stopping = stop.requested
      checkpointer.save(completed, state, force=final or stopping or refresh_due)
      window_pauses += time.perf_counter() - paused
      if stopping:
        progress.write(f"SIGTERM: saved checkpoint {completed}, stopping")
        break
  checkpointer.wait()
  checkpointer.close()
  progress.close()
  log.close()
  return state



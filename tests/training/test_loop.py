"""The loop's optimisation options: gradient accumulation over micro-batches, frozen parameter
groups; each against the direct computation, and refused where it would be wrong."""

import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from orqa_realm.core.errors import InputError
from orqa_realm.core.parallel import make_mesh
from orqa_realm.modeling import partitioning
from orqa_realm.tasks.base import Task
from orqa_realm.training import loop
from tests.tasks.tiny_ict import tiny_ict_task


class Rows(NamedTuple):
  x: np.ndarray  # [rows, tokens, 3]
  y: np.ndarray  # [rows, tokens, 2]
  mask: np.ndarray  # [rows, tokens] float32, 1 on real tokens


class SquaredError(Task):
  """A linear map's squared error, averaged over each row's tokens then over rows
  (`per_token=False`), or over all the batch's real tokens (`per_token=True`)."""
  name = "squared_error"
  config_class = object
  accumulates_gradients = True

  def __init__(self, per_token: bool):
    self.per_token = per_token

  def run_model(self):
    return {}

  def init_params(self, rng):
    return {"w": jax.random.normal(rng, (3, 2)), "b": jnp.zeros((2,))}

  def train_batch(self, step, context):
    raise NotImplementedError  # the tests hand batches directly

  def loss_weight(self, batch):
    return jnp.sum(batch.mask) if self.per_token else super().loss_weight(batch)

  def loss(self, params, batch, rng, deterministic):
    del rng, deterministic
    errors = jnp.sum((batch.x @ params["w"] + params["b"] - batch.y) ** 2, -1) * batch.mask
    if self.per_token:
      loss = jnp.sum(errors) / jnp.sum(batch.mask)
    else:
      loss = jnp.mean(jnp.sum(errors, -1) / jnp.sum(batch.mask, -1))
    return loss, {"loss": loss, "first_x": jnp.mean(batch.x[:, 0, 0])}


def uneven_rows(rows=8, tokens=5) -> Rows:
  """Rows with 1 to `tokens` real tokens: micro-batches of them hold unequal token counts."""
  rng = np.random.default_rng(0)
  mask = (np.arange(tokens)[None] < rng.integers(1, tokens + 1, size=(rows, 1)))
  return Rows(rng.normal(size=(rows, tokens, 3)).astype(np.float32),
              rng.normal(size=(rows, tokens, 2)).astype(np.float32), mask.astype(np.float32))


def test_micro_batches_deal_the_rows():
  dealt = loop.micro_batches({"a": jnp.arange(12).reshape(6, 2)}, 3)["a"]
  np.testing.assert_array_equal(dealt[:, :, 0], [[0, 6], [2, 8], [4, 10]])


@pytest.mark.parametrize("per_token", [False, True])
@pytest.mark.parametrize("steps", [2, 4])
def test_accumulated_gradients_equal_the_whole_batch(per_token, steps):
  task, batch = SquaredError(per_token), uneven_rows()
  params = task.init_params(jax.random.key(0))
  rng = jax.random.key(1)
  loss, metrics, grads = jax.jit(lambda p, b: loop.batch_gradients(task, p, b, rng))(params, batch)
  accumulated = jax.jit(lambda p, b: loop.batch_gradients(task, p, b, rng, steps))(params, batch)
  np.testing.assert_allclose(accumulated[0], loss, rtol=1e-6)
  np.testing.assert_allclose(accumulated[1]["loss"], metrics["loss"], rtol=1e-6)
  for name in grads:
    np.testing.assert_allclose(accumulated[2][name], grads[name], rtol=1e-5, atol=1e-7)
  if per_token:
    # Averaging the micro-batches' gradients alike (without their token counts) is not it.
    micro = loop.micro_batches(batch, steps)
    plain_mean = np.mean([jax.grad(lambda p, b: task.loss(p, b, rng, False)[0])(
        params, jax.tree.map(lambda x, i=i: x[i], micro))["w"] for i in range(steps)], axis=0)
    assert np.abs(plain_mean - grads["w"]).max() > 1e-3


def test_an_accumulated_train_step_takes_the_whole_batchs_step():
  task, batch = SquaredError(True), uneven_rows()
  params = task.init_params(jax.random.key(0))
  optimizer = loop.make_optimizer(loop.TrainConfig(num_train_steps=10, learning_rate=0.1,
                                                   warmup_steps=0))
  state = loop.TrainState(jnp.int32(0), params, optimizer.init(params))
  schedule = optax.constant_schedule(0.1)
  whole = jax.jit(loop.make_train_step(task, optimizer, schedule, jax.random.key(2)))
  dealt = jax.jit(loop.make_train_step(task, optimizer, schedule, jax.random.key(2), 4))
  (whole_state, whole_metrics), (dealt_state, dealt_metrics) = whole(state, batch), dealt(
      state, batch)
  np.testing.assert_allclose(dealt_state.params["w"], whole_state.params["w"], rtol=1e-5)
  np.testing.assert_allclose(dealt_metrics["grad_norm"], whole_metrics["grad_norm"], rtol=1e-5)


def frozen_case():
  params = {"bert": {"dense": {"kernel": np.full((3, 3), 0.1, np.float32)}},
            "head": {"kernel": np.full((3, 2), -0.25, np.float32),
                     "bias": np.zeros((2,), np.float32)}}
  grads = {"bert": {"dense": {"kernel": np.full((3, 3), 5.0, np.float32)}},
           "head": {"kernel": np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
                    "bias": np.full((2,), 0.5, np.float32)}}
  return params, grads


def test_frozen_parameters_do_not_move_and_keep_no_state():
  """A frozen group is bitwise unchanged, has no Adam moments, and its (large) gradient is not
  part of the clipped norm: the others step as if it did not exist."""
  params, grads = frozen_case()
  base = dict(num_train_steps=10, learning_rate=1e-2, warmup_steps=0, max_grad_norm=1.0)
  frozen = loop.make_optimizer(loop.TrainConfig(**base, frozen_parameters=("^bert/",)))
  state = frozen.init(params)
  for _ in range(3):
    updates, state = frozen.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(params["bert"]["dense"]["kernel"], frozen_case()[0]["bert"][
      "dense"]["kernel"])
  moments = [leaf for leaf in jax.tree.leaves(state) if np.ndim(leaf) > 0]
  assert sorted(leaf.shape for leaf in moments) == sorted([(2,), (2,), (3, 2), (3, 2)])

  head_only = loop.make_optimizer(loop.TrainConfig(**base))
  head_params, head_grads = frozen_case()[0]["head"], frozen_case()[1]["head"]
  head_state = head_only.init(head_params)
  for _ in range(3):
    updates, head_state = head_only.update(head_grads, head_state, head_params)
    head_params = optax.apply_updates(head_params, updates)
  for name in ("kernel", "bias"):
    np.testing.assert_allclose(params["head"][name], head_params[name], rtol=1e-6)


def test_a_step_computes_no_gradient_for_frozen_parameters():
  """Frozen parameters enter the loss under stop_gradient: the step's gradient norm is the
  trained parameters' alone, and they move as without the frozen ones."""
  task, batch = SquaredError(True), uneven_rows()
  params = task.init_params(jax.random.key(0))
  config = loop.TrainConfig(num_train_steps=10, learning_rate=0.1, warmup_steps=0,
                            frozen_parameters=("^b$",))
  optimizer = loop.make_optimizer(config)
  state = loop.TrainState(jnp.int32(0), params, optimizer.init(params))
  step = jax.jit(loop.make_train_step(task, optimizer, optax.constant_schedule(0.1),
                                      jax.random.key(2), frozen=loop.frozen_patterns(config)))
  new_state, metrics = step(state, batch)
  grads = jax.grad(lambda p: task.loss(p, batch, None, False)[0])(params)
  np.testing.assert_allclose(metrics["grad_norm"], np.linalg.norm(grads["w"]), rtol=1e-5)
  np.testing.assert_array_equal(new_state.params["b"], params["b"])
  assert not np.array_equal(new_state.params["w"], params["w"])


@pytest.mark.parametrize("rule", ["(bert", "[x"])
def test_a_malformed_frozen_pattern_is_refused(rule):
  with pytest.raises(InputError, match="not a regular expression"):
    loop.frozen_patterns(loop.TrainConfig(frozen_parameters=(rule,)))


@pytest.fixture(scope="module")
def ict_task(squad_block_store, tiny_bert_dir):
  return tiny_ict_task(squad_block_store.directory, tiny_bert_dir)


def parameter_names(task):
  return [loop.parameter_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(
      jax.eval_shape(lambda: partitioning.unbox(task.init_params(jax.random.key(0)))))[0]]


def test_a_run_with_a_frozen_tower_resumes_with_it_unchanged(ict_task, tmp_path):
  """Through the loop: checkpoints of a partly frozen state save and restore, and the frozen
  tower ends as it began while the other trains."""
  frozen = "^block_"
  assert any(re.search(frozen, name) for name in parameter_names(ict_task))
  config = dict(workdir=str(tmp_path), batch_size=8, learning_rate=1e-2, warmup_steps=0,
                checkpoint_every_steps=1, async_checkpoints=False, frozen_parameters=(frozen,))
  first = loop.train(ict_task, loop.TrainConfig(num_train_steps=1, **config))
  flat_initial = dict(jax.tree_util.tree_flatten_with_path(
      partitioning.unbox(jax.device_get(ict_task.init_params(jax.random.key(0)))))[0])
  resumed = loop.train(ict_task, loop.TrainConfig(num_train_steps=2, **config))
  assert int(resumed.step) == 2
  flat_first = dict(jax.tree_util.tree_flatten_with_path(jax.device_get(first.params))[0])
  for path, value in jax.tree_util.tree_flatten_with_path(jax.device_get(resumed.params))[0]:
    name = loop.parameter_name(path)
    start_value = flat_initial[path]
    if re.search(frozen, name):
      np.testing.assert_array_equal(value, start_value, err_msg=name)
    elif name.endswith("kernel"):
      assert not np.array_equal(value, flat_first[path]), name


@pytest.mark.parametrize("settings,message", [
    (dict(frozen_parameters=("^nothing_here$",)), r"'\^nothing_here\$' matches no parameter"),
    (dict(grad_accum_steps=2), "--task=ict's loss is not a mean over independent examples"),
    (dict(grad_accum_steps=0), "must be at least 1")])
def test_unusable_settings_are_refused_before_the_run_starts(ict_task, tmp_path, settings,
                                                             message):
  with pytest.raises(InputError, match=message):
    loop.train(ict_task, loop.TrainConfig(workdir=str(tmp_path), num_train_steps=1,
                                           batch_size=8, **settings))
  assert not list(tmp_path.iterdir())


def test_a_batch_that_does_not_deal_evenly_is_refused():
  config = loop.TrainConfig(batch_size=6, grad_accum_steps=4)
  with pytest.raises(InputError, match="--batch_size=6 does not split into 4 micro-batches"):
    loop.check_accumulation(SquaredError(True), config, make_mesh())


def test_one_step_in_flight_waits_for_the_step_before_the_newest():
  """So that the loop reads a SIGTERM within a step or two, not at its next log."""
  slow_step = jax.jit(lambda x: jnp.linalg.matrix_power(x, 40))  # about 0.2 s on 2 cores
  x = jnp.eye(1024) * 0.999
  slow_step(x).block_until_ready()
  in_flight, outputs = loop.OneStepInFlight(), []
  for _ in range(3):
    outputs.append(slow_step(x))
    in_flight.add(outputs[-1])
    if len(outputs) > 1:
      assert outputs[-2].is_ready()
  # Dispatch is asynchronous (the newest step is still running), so the wait above is the
  # helper's doing, and it did not wait for the newest.
  assert not outputs[-1].is_ready()

"""What a training objective provides to the generic loop in `orqa_realm.train`."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import Any

import jax

Params = Any
Batch = Any  # a pytree of numpy arrays whose leading axis is the global batch


class Task(abc.ABC):
  """A training objective: its model, data and loss.

  The loop owns the optimizer, the mesh, checkpoints and logging; a task only says how to build
  its parameters, which global batch step k uses (given the parameters it starts from), and the
  loss of a batch. `loss` must be a pure
  function of its arguments (it is jitted with the batch sharded over the mesh and written over
  the global batch).
  """

  name: str

  @abc.abstractmethod
  def model_config(self) -> dict[str, Any]:
    """The architecture, as JSON data; a resumed run must have the same."""

  @abc.abstractmethod
  def init_params(self, rng: jax.Array) -> Params:
    """Initial parameters (from pretrained weights where the task says so). It reads no
    checkpoint: a resumed run takes its shapes with `jax.eval_shape`, under which a restore
    cannot run."""

  def warm_start(self, params: Params) -> Params:
    """The parameters a fresh run starts from: `params` (from `init_params`) with the parts that
    another run trained (`--retriever_workdir`) read from its checkpoint. The loop calls it once,
    outside any trace, and only when the run has no checkpoint of its own. Identity by default."""
    return params

  # Whether batches are mined from the refreshed index of the model being trained (ANCE): the
  # loop then indexes the initial model before step 0 and passes each step the newest version.
  needs_index: bool = False

  @abc.abstractmethod
  def train_batch(self, step: int, params: Params = None,
                  mesh: jax.sharding.Mesh | None = None, index: Any = None) -> Batch:
    """The global batch of step `step`: a pure function of the task's seed, `step` and, for a
    task whose batches depend on the model, `params` (the parameters step `step` starts from,
    replicated over `mesh`; ORQA retrieves each question's blocks with them) and `index` (the
    `LoadedIndex` version the loop took for this step, for tasks that `needs_index`). Leaves are
    numpy arrays of the whole global batch, or jax Arrays already on `mesh`."""

  @abc.abstractmethod
  def loss(self, params: Params, batch: Batch, rng: jax.Array,
           deterministic: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(scalar loss, metrics) over the global batch; `rng` drives dropout."""

  def eval_batches(self) -> Iterator[Batch]:
    """Held-out batches on which the loop reports the mean of `loss`'s metrics (none by default)."""
    return iter(())

  def evaluate(self, params: Params, mesh: jax.sharding.Mesh) -> dict[str, float]:
    """Metrics that batched losses cannot give (e.g. retrieval over the whole corpus), computed
    at each evaluation with `params` replicated over `mesh`; none by default."""
    del params, mesh
    return {}

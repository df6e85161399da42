"""What a training objective provides to the loop (`orqa_realm.training.loop`), and what the loop
hands it each step."""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterator
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from orqa_realm.index import storage
from orqa_realm.index.handle import LoadedIndex
from orqa_realm.modeling.bert import RematPolicy
from orqa_realm.modeling.retriever import ARCHITECTURE_FIELDS, RetrieverConfig

Params = Any
Batch = Any  # a pytree of arrays whose leading axis is the batch (or a host's rows of it)


class Need(enum.Enum):
  """What a task's batches depend on besides the step (declared in `Task.needs`)."""
  # The parameters the step starts from (ORQA retrieves each question's blocks with them).
  PARAMS = "params"
  # The newest loaded version of the refreshed index of the model being trained (ANCE's
  # negatives, REALM's candidates); the loop indexes the initial model before step 0.
  INDEX = "index"


class StepContext:
  """What the loop hands `Task.train_batch`: the mesh, the rows of the global batch this host
  builds, and what the task declared it needs.

  Reading something the task did not declare is an error rather than a None, so that a task
  cannot silently depend on what the loop does not give it.
  """

  def __init__(self, mesh: jax.sharding.Mesh, rows: slice | None = None, *,
               params: Params = None, index: LoadedIndex | None = None):
    """`rows`: this host's rows of the global batch (None: all of them, for one host)."""
    self.mesh = mesh
    self.rows = rows if rows is not None else slice(None)
    self._params = params
    self._index = index

  @property
  def params(self) -> Params:
    """The parameters the step starts from, on `mesh` as training holds them (split over
    "fsdp" by their logical axes)."""
    if self._params is None:
      raise RuntimeError("the task did not declare Need.PARAMS")
    return self._params

  @property
  def index(self) -> LoadedIndex:
    """The index version the loop took for this step (the same on every host)."""
    if self._index is None:
      raise RuntimeError("the task did not declare Need.INDEX")
    return self._index


class TaskContext(NamedTuple):
  """The loop's settings a task is built with."""
  batch_size: int  # global, over all devices and hosts
  seed: int  # seeds initialisation, dropout and the data order
  dtype: str  # matmul compute dtype ("float32" or "bfloat16")
  remat: RematPolicy  # what each BERT layer keeps for its backward pass


class SavedRetriever(NamedTuple):
  """A retriever a task's settings name elsewhere (a run it warm-starts from, ORQA's index),
  whose settings the task takes."""
  config: RetrieverConfig
  source: str  # where it was read from, for messages


class Task(abc.ABC):
  """A training objective: its model, data and loss.

  The loop owns the optimizer, the mesh, checkpoints and logging; a task only says how to build
  its parameters, which global batch step k uses, and the loss of a batch. `loss` must be a pure
  function of its arguments (it is jitted with the batch sharded over the mesh and written over
  the global batch).
  """

  name: ClassVar[str]
  config_class: ClassVar[type]  # the frozen settings dataclass the task is built from
  needs: ClassVar[frozenset[Need]] = frozenset()
  # What of a saved retriever (`saved_retriever`) the task must keep; the rest it may set.
  fixed_retriever_fields: ClassVar[tuple[str, ...]] = ARCHITECTURE_FIELDS
  # Whether the task trains the block tower (whose checkpoints a refresher can index).
  trains_block_tower: ClassVar[bool] = True
  # The kind of index its checkpoints are published as (`index.storage`: dense or multi-vector).
  index_kind: ClassVar[str] = storage.DENSE
  # Whether `--grad_accum_steps` may split its batches: the loss is a mean over the batch's
  # rows (or their tokens, as `loss_weight` says), each row's term independent of the others'
  # (not so for in-batch negatives), and every leaf's leading axis is those rows.
  accumulates_gradients: ClassVar[bool] = False
  config: Any  # the task's settings (an instance of `config_class`), as the task uses them

  @classmethod
  def saved_retriever(cls, config: Any) -> SavedRetriever | None:
    """The retriever `config` names elsewhere (a warm-start run, an index), whose architecture
    the task must take (and whose input settings it takes unless the user sets them); None
    when the task's own settings describe its retriever."""
    del config
    return None

  @abc.abstractmethod
  def run_model(self) -> dict[str, Any]:
    """What the run's checkpoints need to be used, as JSON data (run.json's `model`); a resumed
    run must have the same."""

  @abc.abstractmethod
  def init_params(self, rng: jax.Array) -> Params:
    """Initial parameters (from pretrained weights where the task says so), boxed with their
    logical axes as `Module.init` returns them (`modeling.partitioning`): the loop shards them
    by those and unboxes them. It reads no checkpoint: the loop takes the shapes with
    `jax.eval_shape`, under which a restore cannot run."""

  def warm_start(self, params: Params, mesh: jax.sharding.Mesh) -> Params:
    """The parameters a fresh run starts from: `params` (from `init_params`, unboxed) with the
    parts that another run trained (`--retriever_workdir`) read from its checkpoint, on `mesh`.
    The loop calls it once, outside any trace, and only when the run has no checkpoint of its
    own. Identity by default."""
    del mesh
    return params

  @abc.abstractmethod
  def train_batch(self, step: int, context: StepContext) -> Batch:
    """This host's rows (`context.rows`) of the global batch of step `step`: a pure function of
    the task's seed, `step` and what the task declared in `needs` (read from `context`). Leaves
    are numpy arrays of those rows, or jax Arrays of the whole global batch already on
    `context.mesh`. Only those rows are built: on N hosts each builds 1/N of the batch."""

  @abc.abstractmethod
  def loss(self, params: Params, batch: Batch, rng: jax.Array,
           deterministic: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(scalar loss, metrics) over the global batch; `rng` drives dropout."""

  def init_task_state(self, params: Params) -> Any:
    """What the task carries from step to step besides the parameters (MoCo's momentum encoder
    and queue of keys), from the initial (unboxed) `params`: checkpointed and restored with
    them, replicated over the mesh. None (the default): a stateless task, whose `loss` is all
    the loop calls."""
    del params
    return None

  def stateful_loss(self, params: Params, task_state: Any, batch: Batch,
                    rng: jax.Array) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any]]:
    """A stateful task's training loss: (scalar loss, (metrics, next task state)), dropout on.
    Evaluation still calls `loss`."""
    raise NotImplementedError(f"--task={self.name} has no task state")

  def loss_weight(self, batch: Batch) -> jax.Array:
    """What `loss` averages over in `batch` (traced): the weight of a micro-batch's loss and
    gradient when they are accumulated (`accumulates_gradients`). Its rows by default; a loss
    averaged over tokens says how many."""
    return jnp.float32(jax.tree.leaves(batch)[0].shape[0])

  def eval_batches(self) -> Iterator[Batch]:
    """Held-out batches on which the loop reports the mean of `loss`'s metrics (none by default)."""
    return iter(())

  def evaluate(self, params: Params, mesh: jax.sharding.Mesh,
               index: LoadedIndex | None = None) -> dict[str, float]:
    """Metrics that batched losses cannot give (e.g. retrieval over the whole corpus), computed
    at each evaluation with `params` on `mesh` as training holds them, and `index`, the version
    of the refreshed index training uses now (for a task that declares Need.INDEX; else None);
    none by default."""
    del params, mesh, index
    return {}

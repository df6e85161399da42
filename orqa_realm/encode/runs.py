"""Opening a training run from its description (`run.json`): the retriever or ORQA model it
trains, with the settings its checkpoints need, and their parameters.

Every task that trains a retriever saves the same model description (`retriever_model`): the
retriever's settings (architecture, pooling, lengths, block format, normalisation, score scale)
and the tokenizer's fingerprint. REALM adds its knowledge-augmented encoder; ORQA its reader, how
it reads, and the frozen index it was trained over.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from orqa_realm.core import checkpoints, parallel, paths, run_directory
from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.encode import embedding
from orqa_realm.encode.predict import ReaderSettings
from orqa_realm.index.storage import IndexVersion
from orqa_realm.modeling import (cross_encoder, decoder, deepct, mlm, multi_vector,
                                 partitioning, reader, retriever, splade)

ORQA_TASK = "orqa"
# ADORE trains only a question tower over a frozen index, as ORQA's retriever half does.
ADORE_TASK = "adore"


@dataclasses.dataclass(frozen=True)
class RunCheckpoint:
  """A training run's checkpoint that a command uses (embeds, evaluates)."""
  workdir: str = setting(
      "", "A training run (local path or gs:// URI) whose checkpoint is used, with the settings "
      "the run saved; empty: --bert's weights.")
  checkpoint_step: int = setting(-1, "Checkpoint of --workdir; -1: the newest.")

  @property
  def step(self) -> int | None:
    return None if self.checkpoint_step < 0 else self.checkpoint_step


def retriever_model(config: retriever.RetrieverConfig, tokenizer_fingerprint: str
                    ) -> dict[str, Any]:
  """The model description of a run that trains `config` (its run.json `model`)."""
  return dict(retriever=config.to_dict(), tokenizer_fingerprint=tokenizer_fingerprint)


class RetrieverRun(NamedTuple):
  """A run that trains (or holds) a retriever, as its description says."""
  workdir: str
  task: str
  retriever: retriever.RetrieverConfig
  tokenizer_fingerprint: str
  model: dict[str, Any]  # the whole model description (REALM's knowledge encoder, ...)
  run_id: str | None = None  # None: not started yet, or created before runs had ids


def retriever_run_of(workdir: str, task: str, model: dict[str, Any],
                     run_id: str | None = None) -> RetrieverRun:
  """The run of `task` with the model description `model` (its run.json's) in `workdir`."""
  if cross_encoder.CROSS_ENCODER in model:
    raise InputError(f"the run (task {task!r}) is a cross-encoder, which scores (query, block) "
                     "pairs and embeds nothing, where a dual-encoder retriever run (ict, dpr, "
                     "ance, realm, ...) is expected; a cross-encoder reranks (evaluate "
                     "--rerank_workdir)", path=workdir)
  if multi_vector.MULTI_VECTOR in model:
    raise InputError(f"the run (task {task!r}) is {model_kind(model)}, whose blocks are sets "
                     "of vectors, where a dual-encoder retriever run (ict, dpr, ance, realm, ...) "
                     f"is expected: search it with --retrieval={task}", path=workdir)
  if "retriever" not in model:
    raise InputError(f"a run of task {task!r} holds no retriever", path=workdir)
  if task == ADORE_TASK:
    raise InputError("an ADORE run holds a question tower only, trained over a frozen index: "
                     "it searches that index (evaluate --workdir=RUN --index_dir=THE_INDEX) and "
                     "embeds no blocks", path=workdir)
  return RetrieverRun(workdir, task, retriever.RetrieverConfig.from_dict(model["retriever"]),
                      model["tokenizer_fingerprint"], model, run_id)


def open_retriever_run(workdir: str) -> RetrieverRun:
  """The retriever of the run in `workdir`."""
  description = run_directory.read_run(workdir)
  return retriever_run_of(description.workdir, description.task, description.model,
                          description.run_id)


def run_identity(workdir: str) -> dict[str, Any]:
  """What an index version records of the run it was embedded from (read from run.json, which
  exists once the run has a checkpoint)."""
  description = run_directory.read_run(workdir)
  return dict(workdir=description.workdir, run_id=description.run_id)


def indexed_run(version: IndexVersion) -> dict[str, Any] | None:
  """The run `version` was embedded from ({workdir, run_id}), None for pretrained weights."""
  if version.checkpoint_step is None:
    return None
  if embedding.INDEXED_RUN not in version.metadata:
    raise InputError("this index version does not record the run it was embedded from (it was "
                     "published by an earlier orqa_realm): re-embed it", path=version.directory)
  return version.metadata[embedding.INDEXED_RUN]


def check_embedded_from(version: IndexVersion, run: RetrieverRun | MultiVectorRun) -> None:
  """Refuses an index that was not embedded from a checkpoint of `run`: another run's query
  tower, even of the same architecture and step, was never trained against these blocks."""
  recorded = indexed_run(version)
  if recorded is None:
    raise InputError(f"the index was embedded from pretrained weights, not from a checkpoint of "
                     f"the run {run.workdir}", path=version.directory)
  if not run_directory.is_same_run(recorded, run.workdir, run.run_id):
    raise InputError(f"the index was embedded from the run {recorded['workdir']} (id "
                     f"{recorded.get('run_id')}), not from {run.workdir} (id {run.run_id}): "
                     "pass that run, or re-embed with this one", path=version.directory)


def check_embedded_by_run_in(version: IndexVersion, workdir: str) -> None:
  """Refuses an index version that was not embedded from a checkpoint of the run in `workdir`
  (the trainer's own refreshed index: a refresher of another run publishing into the same root
  would otherwise hand this run another model's embeddings)."""
  recorded = indexed_run(version)
  source = ("pretrained weights" if recorded is None else
            f"the run {recorded['workdir']} (id {recorded.get('run_id')})")
  if not (paths.resolve(workdir) / run_directory.RUN_FILE).exists():
    # A fresh run, before its description is written: no version can be its own yet.
    raise InputError(f"the version was embedded from {source}, before the run being trained "
                     f"({workdir}) started: give this run its own --index_dir",
                     path=version.directory)
  description = run_directory.read_run(workdir)
  if recorded is None or not run_directory.is_same_run(recorded, description.workdir,
                                                         description.run_id):
    raise InputError(f"the version was embedded from {source}, not from the run being trained "
                     f"({description.workdir}, id {description.run_id}): give this run its own "
                     "--index_dir", path=version.directory)


def is_embedded_by_run_in(version: IndexVersion, workdir: str) -> bool:
  """Whether `version` was embedded from a checkpoint of the run in `workdir`."""
  try:
    check_embedded_by_run_in(version, workdir)
  except InputError:
    return False
  return True


def trained_block_store(description: run_directory.RunDescription) -> str:
  """The block store a run trains on, as its saved settings name it."""
  try:
    return description.settings["task"]["source"]["block_store"]
  except KeyError as e:
    raise InputError("the run's settings name no block store: pass --block_store",
                     path=description.workdir) from e


def trained_bert(description: run_directory.RunDescription) -> str:
  """The BERT a run started from (its tokenizer's model), as its saved settings name it."""
  try:
    return description.settings["task"]["source"]["bert"]
  except KeyError as e:
    raise InputError("the run's settings name no BERT", path=description.workdir) from e


def check_tokenizer(
    run: RetrieverRun | CrossEncoderRun | MultiVectorRun | MultiVectorRunInfo | DecoderRun,
    tokenizer_fingerprint: str, source: str) -> None:
  """Refuses a tokenizer (of `source`: a block store, a decoder) other than the one the run
  trained with."""
  if run.tokenizer_fingerprint != tokenizer_fingerprint:
    raise InputError(f"the run trained with tokenizer {run.tokenizer_fingerprint}, {source} was "
                     f"tokenized with {tokenizer_fingerprint}", path=run.workdir)


def checkpoint_step(checkpoint_reader: checkpoints.CheckpointReader, step: int | None) -> int:
  """`step`, or the newest committed checkpoint when None; an error when the run has none."""
  if step is not None:
    if step not in checkpoint_reader.all_steps():
      raise InputError(f"no checkpoint {step} (there are {checkpoint_reader.all_steps()})",
                       path=checkpoint_reader.directory, field="checkpoint_step")
    return step
  latest = checkpoint_reader.latest_step()
  if latest is None:
    raise InputError("the run has no checkpoint yet", path=checkpoint_reader.directory)
  return latest


def restore_retriever(checkpoint_reader: checkpoints.CheckpointReader, step: int,
                      config: retriever.RetrieverConfig, mesh, *,
                      tower: retriever.Tower | None = None) -> dict[str, Any]:
  """The retriever params (or one tower's) of checkpoint `step`, replicated over `mesh`; the
  optimizer state is not read."""
  shapes = partitioning.unbox(
      jax.eval_shape(lambda: retriever.init_params(config, jax.random.key(0))))
  if tower is not None:
    shapes = retriever.tower_params(shapes, config, tower)
  return checkpoint_reader.restore_params(
      step, checkpoints.abstract_with_sharding(shapes, parallel.replicated(mesh)))


def restore_latest_retriever(run: RetrieverRun, mesh) -> dict[str, Any]:
  """The retriever params of the newest checkpoint of `run` (a warm start), replicated over
  `mesh`."""
  with checkpoints.CheckpointReader(run_directory.checkpoint_dir(run.workdir)) as checkpoint_reader:
    return restore_retriever(checkpoint_reader, checkpoint_step(checkpoint_reader, None),
                             run.retriever, mesh)


def restore_knowledge_encoder_bert(run: RetrieverRun,
                                   checkpoint_reader: checkpoints.CheckpointReader, step: int,
                                   mesh) -> Any:
  """The BERT of a REALM run's knowledge-augmented encoder at checkpoint `step`, read through
  `checkpoint_reader` (the run's checkpoints; REALM's fine-tuning starts the reader from it), or
  None for a run without one."""
  if mlm.KNOWLEDGE_ENCODER not in run.model:
    return None
  knowledge_config = mlm.KnowledgeEncoderConfig.from_dict(run.model[mlm.KNOWLEDGE_ENCODER])
  shapes = partitioning.unbox(
      jax.eval_shape(lambda: mlm.init_params(knowledge_config, jax.random.key(0))))
  target = {mlm.KNOWLEDGE_ENCODER: {"bert": checkpoints.abstract_with_sharding(
      shapes["bert"], parallel.replicated(mesh))}}
  return checkpoint_reader.restore_params(step, target)[mlm.KNOWLEDGE_ENCODER]["bert"]


def knowledge_encoder_model(config: mlm.KnowledgeEncoderConfig, tokenizer_fingerprint: str
                            ) -> dict[str, Any]:
  """The model description of a run that trains a knowledge-augmented encoder alone (mlm)."""
  return {mlm.KNOWLEDGE_ENCODER: config.to_dict(), "tokenizer_fingerprint": tokenizer_fingerprint}


def restore_knowledge_encoder(workdir: str, config: mlm.KnowledgeEncoderConfig,
                              tokenizer_fingerprint: str, mesh) -> dict[str, Any]:
  """The knowledge-augmented encoder (BERT and MLM head) of the newest checkpoint of an mlm or
  REALM run, replicated over `mesh` (what REALM's `--knowledge_workdir` starts from); refused
  when the run holds none, or one of another architecture or tokenizer."""
  description = run_directory.read_run(workdir)
  model = description.model
  if mlm.KNOWLEDGE_ENCODER not in model:
    raise InputError(f"the run (task {description.task!r}) is {model_kind(model)}, without a "
                     "knowledge-augmented encoder (--task=mlm or realm)", path=workdir,
                     field="knowledge_workdir")
  if mlm.KnowledgeEncoderConfig.from_dict(model[mlm.KNOWLEDGE_ENCODER]) != config:
    raise InputError("the run's knowledge encoder is not --bert's architecture", path=workdir,
                     field="knowledge_workdir")
  if model["tokenizer_fingerprint"] != tokenizer_fingerprint:
    raise InputError(f"the run trained with tokenizer {model['tokenizer_fingerprint']}, the "
                     f"block store is tokenized with {tokenizer_fingerprint}", path=workdir,
                     field="knowledge_workdir")
  shapes = replicated_params_shapes(
      lambda rng: {mlm.KNOWLEDGE_ENCODER: mlm.init_params(config, rng)}, mesh)
  with checkpoints.CheckpointReader(run_directory.checkpoint_dir(workdir)) as checkpoint_reader:
    step = checkpoint_step(checkpoint_reader, None)
    return checkpoint_reader.restore_params(step, shapes)[mlm.KNOWLEDGE_ENCODER]


def orqa_model(config: retriever.RetrieverConfig, tokenizer_fingerprint: str,
               reader_config: reader.ReaderConfig, settings: ReaderSettings,
               version: IndexVersion) -> dict[str, Any]:
  """The model description of an ORQA run: its question encoder, its reader and how it reads,
  and the frozen index it is trained over."""
  return dict(retriever_model(config, tokenizer_fingerprint), reader=reader_config.to_dict(),
              reader_settings=dataclasses.asdict(settings), index=frozen_index(version))


def frozen_index(version: IndexVersion) -> dict[str, Any]:
  """What a run trained over a frozen index records of it: whose blocks, embedded by what."""
  return dict(store_fingerprint=version.store_fingerprint, num_rows=version.num_rows,
              checkpoint_step=version.checkpoint_step,
              run_id=(indexed_run(version) or {}).get("run_id"))


def adore_model(config: retriever.RetrieverConfig, tokenizer_fingerprint: str,
                version: IndexVersion) -> dict[str, Any]:
  """The model description of an ADORE run: its question encoder and the frozen index."""
  return dict(retriever_model(config, tokenizer_fingerprint), index=frozen_index(version))


class QueryTowerRun(NamedTuple):
  """The question encoder of a run trained over a frozen index (ADORE), read back."""
  workdir: str
  retriever_config: retriever.RetrieverConfig
  tokenizer_fingerprint: str
  params: dict[str, Any]  # the query tower's
  step: int
  index: dict[str, Any]  # the frozen index it was trained over (`frozen_index`)


def query_tower_shapes(config: retriever.RetrieverConfig) -> dict[str, Any]:
  """The shapes of the query tower's params of `config`."""
  return partitioning.unbox(jax.eval_shape(lambda: retriever.tower_params(
      retriever.init_params(config, jax.random.key(0)), config, "query")))


def restore_query_tower_run(workdir: str, step: int | None, mesh) -> QueryTowerRun:
  """The question encoder of the ADORE run `workdir` at checkpoint `step` (None: the newest),
  replicated over `mesh`."""
  description = run_directory.read_run(workdir)
  if description.task != ADORE_TASK:
    raise InputError(f"not an ADORE run (task {description.task!r})", path=workdir)
  config = retriever.RetrieverConfig.from_dict(description.model["retriever"])
  with checkpoints.CheckpointReader(run_directory.checkpoint_dir(workdir)) as checkpoint_reader:
    step = checkpoint_step(checkpoint_reader, step)
    params = checkpoint_reader.restore_params(step, checkpoints.abstract_with_sharding(
        query_tower_shapes(config), parallel.replicated(mesh)))
  return QueryTowerRun(description.workdir, config, description.model["tokenizer_fingerprint"],
                       params, step, description.model["index"])


def orqa_params_shapes(config: retriever.RetrieverConfig, reader_config: reader.ReaderConfig
                       ) -> dict[str, Any]:
  """The shapes of ORQA's params: {"retriever": the query tower's, "reader": the reader's}."""
  return partitioning.unbox(jax.eval_shape(lambda: dict(
      retriever=retriever.tower_params(retriever.init_params(config, jax.random.key(0)), config,
                                       "query"),
      reader=reader.init_params(reader_config, jax.random.key(0)))))


class ORQARun(NamedTuple):
  """A trained ORQA model, read back from its run directory."""
  retriever_config: retriever.RetrieverConfig
  tokenizer_fingerprint: str
  reader_config: reader.ReaderConfig
  settings: ReaderSettings
  params: dict[str, Any]  # {"retriever": query tower params, "reader": reader params}
  step: int
  index: dict[str, Any]  # the frozen index it was trained over (store fingerprint, step, rows)


def restore_orqa_run(workdir: str, step: int | None, mesh) -> ORQARun:
  """The ORQA model of `workdir` at checkpoint `step` (None: the latest), replicated over
  `mesh`; the optimizer state is not read."""
  description = run_directory.read_run(workdir)
  if description.task != ORQA_TASK:
    raise InputError(f"not an ORQA run (task {description.task!r})", path=workdir)
  model = description.model
  retriever_config = retriever.RetrieverConfig.from_dict(model["retriever"])
  reader_config = reader.ReaderConfig.from_dict(model["reader"])
  with checkpoints.CheckpointReader(run_directory.checkpoint_dir(workdir)) as checkpoint_reader:
    step = checkpoint_step(checkpoint_reader, step)
    params = checkpoint_reader.restore_params(step, checkpoints.abstract_with_sharding(
        orqa_params_shapes(retriever_config, reader_config), parallel.replicated(mesh)))
  return ORQARun(retriever_config, model["tokenizer_fingerprint"], reader_config,
                 ReaderSettings(**model["reader_settings"]), params, step, model["index"])


def check_index_of_run(run: ORQARun | QueryTowerRun, version: IndexVersion) -> None:
  """Refuses an index whose blocks were embedded otherwise than those the run was trained over:
  by another checkpoint or run, another tokenizer, or other block settings (the question encoder
  learned to search those very embeddings). The corpus may be another one: answering over a new
  corpus embedded with the same block encoder is what open-domain QA is for."""
  what = "(checkpoint, run id)"
  expected = (run.index["checkpoint_step"], run.index.get("run_id"))
  found = (version.checkpoint_step, (indexed_run(version) or {}).get("run_id"))
  if "run_id" not in run.index:
    # A run from before runs had ids names its encoder by step alone: only its own corpus.
    what = "(store, rows, checkpoint)"
    expected = (run.index["store_fingerprint"], run.index["num_rows"], expected[0])
    found = (version.store_fingerprint, version.num_rows, found[0])
  if expected != found:
    raise InputError(
        f"the run was trained over blocks embedded by {what} {expected}, this index by {found}: "
        "embed the corpus with that checkpoint (python -m orqa_realm.embed "
        "--workdir=RETRIEVER_RUN --checkpoint_step=...)", path=version.directory,
        field="index_dir")
  embedding.check_query_encoder(version, run.retriever_config, run.tokenizer_fingerprint,
                                fields=retriever.BLOCK_ENCODER_FIELDS)


def cross_encoder_model(config: cross_encoder.CrossEncoderConfig, tokenizer_fingerprint: str
                        ) -> dict[str, Any]:
  """The model description of a run that trains the cross-encoder `config`."""
  return {cross_encoder.CROSS_ENCODER: config.to_dict(),
          "tokenizer_fingerprint": tokenizer_fingerprint}


class CrossEncoderRun(NamedTuple):
  """A trained cross-encoder, read back from its run directory."""
  workdir: str
  config: cross_encoder.CrossEncoderConfig
  tokenizer_fingerprint: str
  params: dict[str, Any]
  step: int
  run_id: str | None = None


def replicated_params_shapes(init_params: Callable[[jax.Array], Any], mesh) -> Any:
  """The unboxed params `init_params(rng)` would give, as abstract arrays replicated over
  `mesh`: what a checkpoint's params are restored into."""
  return checkpoints.abstract_with_sharding(
      partitioning.unbox(jax.eval_shape(lambda: init_params(jax.random.key(0)))),
      parallel.replicated(mesh))


def restore_cross_encoder_run(workdir: str, step: int | None, mesh) -> CrossEncoderRun:
  """The cross-encoder of `workdir` at checkpoint `step` (None: the newest), replicated over
  `mesh`: a cross-encoder run's, or the ranker of a joint run (RocketQAv2); a run of another
  kind is refused, naming what it is."""
  description = run_directory.read_run(workdir)
  model = description.model
  key = next((key for key in (cross_encoder.CROSS_ENCODER, cross_encoder.JOINT_RANKER)
              if key in model), None)
  if key is None:
    kind = model_kind(model)
    raise InputError(f"the run (task {description.task!r}) is {kind}, where a cross-encoder run "
                     "(--task=cross_encoder) is expected: a dual encoder retrieves (evaluate "
                     "--workdir), a cross-encoder reranks", path=workdir)
  config = cross_encoder.CrossEncoderConfig.from_dict(model[key])
  shapes = replicated_params_shapes(functools.partial(cross_encoder.init_params, config), mesh)
  with checkpoints.CheckpointReader(run_directory.checkpoint_dir(workdir)) as checkpoint_reader:
    step = checkpoint_step(checkpoint_reader, step)
    if key == cross_encoder.JOINT_RANKER:
      params = checkpoint_reader.restore_params(step, {key: shapes})[key]
    else:
      params = checkpoint_reader.restore_params(step, shapes)
  return CrossEncoderRun(description.workdir, config, model["tokenizer_fingerprint"], params,
                         step, description.run_id)


def model_kind(model: dict[str, Any]) -> str:
  """What a run's model description holds, in words, for messages."""
  if DECODER in model:
    return "a decoder LM"
  if multi_vector.MULTI_VECTOR in model:
    return f"a multi-vector retriever ({model[multi_vector.MULTI_VECTOR]['kind']})"
  if cross_encoder.CROSS_ENCODER in model:
    return "a cross-encoder"
  if "retriever" in model:
    return "a dual-encoder retriever"
  if splade.SPLADE in model:
    return "a SPLADE sparse retriever"
  if deepct.DEEPCT in model:
    return "a DeepCT term weighter"
  if mlm.KNOWLEDGE_ENCODER in model:
    return "a knowledge-augmented encoder"
  return "another model"


def multi_vector_model(config: multi_vector.MultiVectorConfig, tokenizer_fingerprint: str
                       ) -> dict[str, Any]:
  """The model description of a run that trains the multi-vector retriever `config`."""
  return {multi_vector.MULTI_VECTOR: config.to_dict(),
          "tokenizer_fingerprint": tokenizer_fingerprint}


class MultiVectorRunInfo(NamedTuple):
  """A run that trains a multi-vector retriever, as its description says."""
  workdir: str
  config: multi_vector.MultiVectorConfig
  tokenizer_fingerprint: str
  run_id: str | None = None


class MultiVectorRun(NamedTuple):
  """A trained multi-vector retriever, read back from its run directory."""
  workdir: str
  config: multi_vector.MultiVectorConfig
  tokenizer_fingerprint: str
  params: dict[str, Any]
  step: int
  run_id: str | None = None


def open_multi_vector_run(workdir: str) -> MultiVectorRunInfo:
  """The multi-vector retriever `workdir` trains; a run of another kind is refused, naming
  what it is."""
  description = run_directory.read_run(workdir)
  model = description.model
  if multi_vector.MULTI_VECTOR not in model:
    raise InputError(f"the run (task {description.task!r}) is {model_kind(model)}, where a "
                     "multi-vector retriever run (--task=colbert, me_bert or poly_encoder) is "
                     "expected", path=workdir)
  return MultiVectorRunInfo(description.workdir,
                            multi_vector.MultiVectorConfig.from_dict(model[multi_vector.MULTI_VECTOR]),
                            model["tokenizer_fingerprint"], description.run_id)


def restore_multi_vector_params(checkpoint_reader: checkpoints.CheckpointReader, step: int,
                                config: multi_vector.MultiVectorConfig, mesh) -> dict[str, Any]:
  """The multi-vector retriever's params of checkpoint `step`, replicated over `mesh`."""
  return checkpoint_reader.restore_params(
      step, replicated_params_shapes(functools.partial(multi_vector.init_params, config), mesh))


def restore_multi_vector_run(workdir: str, step: int | None, mesh) -> MultiVectorRun:
  """The multi-vector retriever of `workdir` at checkpoint `step` (None: the newest),
  replicated over `mesh`."""
  info = open_multi_vector_run(workdir)
  with checkpoints.CheckpointReader(run_directory.checkpoint_dir(workdir)) as checkpoint_reader:
    step = checkpoint_step(checkpoint_reader, step)
    params = restore_multi_vector_params(checkpoint_reader, step, info.config, mesh)
  return MultiVectorRun(info.workdir, info.config, info.tokenizer_fingerprint, params, step,
                        info.run_id)


DECODER = "decoder"


def decoder_model(config: decoder.DecoderConfig, tokenizer_fingerprint: str,
                  source: str) -> dict[str, Any]:
  """The model description of a run that fine-tunes the decoder `config`, read from `source`
  (the GGUF file or directory whose tokenizer it keeps)."""
  return {DECODER: config.to_dict(), "tokenizer_fingerprint": tokenizer_fingerprint,
          "decoder_source": source}


class DecoderRun(NamedTuple):
  """A fine-tuned decoder, read back from its run directory."""
  workdir: str
  config: decoder.DecoderConfig
  tokenizer_fingerprint: str
  source: str  # the GGUF file or directory it was fine-tuned from: its tokenizer is the run's
  params: dict[str, Any]
  step: int
  run_id: str | None


def restore_decoder_run(workdir: str, step: int | None, mesh) -> DecoderRun:
  """The decoder of `workdir` at checkpoint `step` (None: the newest), replicated over `mesh`;
  a run of another kind is refused, naming what it is."""
  description = run_directory.read_run(workdir)
  model = description.model
  if DECODER not in model:
    raise InputError(f"the run (task {description.task!r}) is {model_kind(model)}, where a "
                     "decoder LM run (--task=lm_finetune) is expected", path=workdir)
  config = decoder.DecoderConfig.from_dict(model[DECODER])
  shapes = replicated_params_shapes(functools.partial(decoder.init_params, config), mesh)
  with checkpoints.CheckpointReader(run_directory.checkpoint_dir(workdir)) as checkpoint_reader:
    step = checkpoint_step(checkpoint_reader, step)
    params = checkpoint_reader.restore_params(step, shapes)
  return DecoderRun(description.workdir, config, model["tokenizer_fingerprint"],
                    model["decoder_source"], params, step, description.run_id)


def splade_model(config: splade.SpladeConfig, tokenizer_fingerprint: str) -> dict[str, Any]:
  """The model description of a run that trains the SPLADE encoder `config`."""
  return {splade.SPLADE: config.to_dict(), "tokenizer_fingerprint": tokenizer_fingerprint}


class SpladeRun(NamedTuple):
  """A SPLADE encoder, read back from its run directory."""
  workdir: str
  config: splade.SpladeConfig
  tokenizer_fingerprint: str
  params: dict[str, Any]  # the knowledge-encoder layout: bert + MLM head
  step: int
  run_id: str | None


def _restore_single_model_run(workdir: str, step: int | None, mesh, *, key: str, what: str,
                              config_of: Callable[[dict[str, Any]], Any],
                              init_params_of: Callable[[Any], Callable[[jax.Array], Any]]):
  """(description, config, params, step) of a run whose model description holds `key` (one
  model: `config_of` reads its settings, `init_params_of(config)` its parameters' shapes);
  a run of another kind is refused, naming what it is and `what` was expected."""
  description = run_directory.read_run(workdir)
  model = description.model
  if key not in model:
    raise InputError(f"the run (task {description.task!r}) is {model_kind(model)}, where {what} "
                     "is expected", path=workdir)
  config = config_of(model[key])
  shapes = replicated_params_shapes(init_params_of(config), mesh)
  with checkpoints.CheckpointReader(run_directory.checkpoint_dir(workdir)) as checkpoint_reader:
    step = checkpoint_step(checkpoint_reader, step)
    params = checkpoint_reader.restore_params(step, shapes)
  return description, config, params, step


def restore_splade_run(workdir: str, step: int | None, mesh) -> SpladeRun:
  """The SPLADE encoder of `workdir` at checkpoint `step` (None: the newest), replicated over
  `mesh`; a run of another kind is refused, naming what it is."""
  description, config, params, step = _restore_single_model_run(
      workdir, step, mesh, key=splade.SPLADE, what="a SPLADE run (--task=splade)",
      config_of=splade.SpladeConfig.from_dict,
      init_params_of=lambda config: functools.partial(mlm.init_params, config.encoder))
  return SpladeRun(description.workdir, config, description.model["tokenizer_fingerprint"],
                   params, step, description.run_id)


def deepct_model(config: deepct.DeepCTConfig, analyzer: dict[str, str],
                 tokenizer_fingerprint: str) -> dict[str, Any]:
  """The model description of a run that trains the DeepCT term weighter `config`, whose words
  become BM25 terms through `analyzer` ({stemmer, stopwords})."""
  return {deepct.DEEPCT: config.to_dict(), "analyzer": analyzer,
          "tokenizer_fingerprint": tokenizer_fingerprint}


class DeepCTRun(NamedTuple):
  """A DeepCT term weighter, read back from its run directory."""
  workdir: str
  config: deepct.DeepCTConfig
  analyzer: dict[str, str]  # {stemmer, stopwords}: how its words became the terms it learnt
  tokenizer_fingerprint: str
  params: dict[str, Any]
  step: int
  run_id: str | None


def restore_deepct_run(workdir: str, step: int | None, mesh) -> DeepCTRun:
  """The DeepCT term weighter of `workdir` at checkpoint `step` (None: the newest), replicated
  over `mesh`; a run of another kind is refused, naming what it is."""
  description, config, params, step = _restore_single_model_run(
      workdir, step, mesh, key=deepct.DEEPCT, what="a DeepCT run (--task=deepct)",
      config_of=deepct.DeepCTConfig.from_dict,
      init_params_of=lambda config: functools.partial(deepct.init_params, config))
  model = description.model
  return DeepCTRun(description.workdir, config, model["analyzer"], model["tokenizer_fingerprint"],
                   params, step, description.run_id)

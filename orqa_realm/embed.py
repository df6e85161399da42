"""Block embeddings of a block store, published as a new version of an index.

From a training run's checkpoint (the retriever comes from the run: a flag that repeats its
architecture is accepted, one that contradicts it refused; the input lengths are the run's unless
given, e.g. blocks embedded longer than they were trained):

    python -m orqa_realm.embed --block_store=runs/blocks/squad_demo --workdir=runs/ict_demo \\
        --index_dir=runs/index/squad_demo [--checkpoint_step=N] [--index_backend=scann]

or straight from Hugging Face weights (no projection: a fresh one would be random):

    python -m orqa_realm.embed --block_store=runs/blocks/scifact --bert=minilm --pooling=mean \\
        --projection_size=0 --block_format=joined --block_length=256 --index_dir=runs/index/scifact

The version records the retriever's settings and the tokenizer, so that `evaluate` and ORQA
search it only with the query encoder it belongs to.

From a multi-vector run (`--task=colbert`, `me_bert`, `poly_encoder`), the blocks' vectors are
published as a multi-vector index, compressed as ColBERTv2 does unless `--colbert_nbits=0`:

    python -m orqa_realm.embed --block_store=runs/blocks/squad_demo --workdir=runs/colbert_squad \
        --index_dir=runs/index/colbert_squad [--colbert_nbits=2]

After the store grew (`preprocess --grow_from`), `--grow` embeds only the added blocks and
publishes them with the newest version's embeddings (and its ScaNN index, upserted), given the
run and checkpoint that embedded that version:

    python -m orqa_realm.embed --block_store=runs/blocks/grown --workdir=runs/ict_demo \
        --index_dir=runs/index/squad_demo --grow
"""

from __future__ import annotations

import dataclasses
import json
import sys

import jax

from orqa_realm import cli
from orqa_realm.core import checkpoints, parallel, run_directory
from orqa_realm.core import config as settings_lib
from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import BlockStore, StoreSource
from orqa_realm.data.pretrained import resolve_model_dir
from orqa_realm.data.tokenization import Tokenizer
from orqa_realm.encode import embedding, growing, runs
from orqa_realm.encode import multi_vector as multi_vector_encode
from orqa_realm.modeling import multi_vector, partitioning, retriever
from orqa_realm.modeling.hf_import import load_hf_bert, read_config


@dataclasses.dataclass(frozen=True)
class EmbedCommand:
  """Whether every block is embedded, or only those a grown store added."""
  grow: bool = setting(
      False, "Embed only the blocks --block_store added to the store of the index's newest "
      "version (it grew from it with preprocess --grow_from), with the same run and checkpoint.")


SETTINGS = settings_lib.FlagBinder("embed")
SETTINGS.bind("embed", EmbedCommand)
SETTINGS.bind("run", runs.RunCheckpoint)
SETTINGS.bind("store", StoreSource)
SETTINGS.bind("retriever", retriever.RetrieverConfig)
SETTINGS.bind("index", embedding.IndexConfig)
SETTINGS.bind("multi-vector index", multi_vector_encode.MultiVectorIndexConfig)

DENSE_GROUPS = ["embed", "run", "store", "retriever", "index"]
MULTI_VECTOR_GROUPS = ["embed", "run", "store", "multi-vector index"]


def run_retriever(run: runs.RunCheckpoint, tokenizer_fingerprint: str, store_directory: str,
                  mesh) -> tuple[retriever.RetrieverConfig, dict, int]:
  """(the run's retriever: its architecture, and its input settings unless given; its block
  tower's params at the checkpoint; the checkpoint step), refused when the run trained with
  another tokenizer than the store's."""
  saved = runs.open_retriever_run(run.workdir)
  runs.check_tokenizer(saved, tokenizer_fingerprint, store_directory)
  config = settings_lib.settle(saved.retriever, SETTINGS.given_settings("retriever"),
                               fixed=retriever.ARCHITECTURE_FIELDS,
                               source=f"the run {saved.workdir}")
  with checkpoints.CheckpointReader(run_directory.checkpoint_dir(run.workdir)) as reader:
    step = runs.checkpoint_step(reader, run.step)
    params = runs.restore_retriever(reader, step, config, mesh, tower="block")
  return config, params, step


def pretrained_retriever(bert: str) -> tuple[retriever.RetrieverConfig, dict, None]:
  """(the retriever the flags describe, on --bert's weights; its block tower's params; None)."""
  config = SETTINGS.build("retriever", bert=read_config(resolve_model_dir(bert)))
  if config.projection_size:
    raise InputError("without --workdir the model is --bert's weights, which have no projection; "
                     "pass --projection_size=0 (a fresh projection would be random)",
                     field="projection_size")
  params = partitioning.unbox(retriever.init_params(
      config, jax.random.key(0), load_hf_bert(resolve_model_dir(bert)).params))
  return config, retriever.tower_params(params, config, "block"), None


def main() -> None:
  run, source, index = SETTINGS.build("run"), SETTINGS.build("store"), SETTINGS.build("index")
  store, tokenizer = source.open_store()
  if not index.index_dir:
    raise InputError("--index_dir is required", field="index_dir")
  if SETTINGS.given("checkpoint_step") and not run.workdir:
    raise InputError("--checkpoint_step names a checkpoint of --workdir, which is not given",
                     field="checkpoint_step")
  mesh = parallel.make_mesh()
  if run.workdir and multi_vector.MULTI_VECTOR in run_directory.read_run(run.workdir).model:
    embed_multi_vector(run, store, tokenizer, mesh)
    return
  SETTINGS.check_read(DENSE_GROUPS, "embed of a dense retriever")
  if run.workdir:
    config, params, step = run_retriever(run, tokenizer.fingerprint, store.directory, mesh)
  else:
    config, params, step = pretrained_retriever(source.bert)
  grow = SETTINGS.build("embed").grow
  publish = growing.grow_and_publish if grow else embedding.embed_and_publish
  version = publish(store, params, config, index, checkpoint_step=step,
                    run=runs.run_identity(run.workdir) if run.workdir else None, mesh=mesh,
                    show_progress=sys.stderr.isatty())
  summary = dict(version=version.version, checkpoint_step=version.checkpoint_step,
                 num_blocks=version.num_rows, embedding_size=version.embedding_size,
                 blocks_per_second=version.metadata["blocks_per_second"])
  if grow:
    summary["embedded_blocks"] = version.num_rows - version.metadata["grown_from"]["num_rows"]
  print(f"published {version.directory}: {json.dumps(summary)}")


def embed_multi_vector(run: runs.RunCheckpoint, store: BlockStore, tokenizer: Tokenizer,
                       mesh: jax.sharding.Mesh) -> None:
  """Publishes the store's vectors by the multi-vector run's checkpoint."""
  SETTINGS.check_read(MULTI_VECTOR_GROUPS, "embed of a multi-vector run")
  if SETTINGS.build("embed").grow:
    raise InputError("--grow extends dense indexes only: embed the grown store whole",
                     field="grow")
  restored = runs.restore_multi_vector_run(run.workdir, run.step, mesh)
  runs.check_tokenizer(restored, tokenizer.fingerprint, store.directory)
  version = multi_vector_encode.embed_and_publish(
      store, tokenizer, restored.params, restored.config, SETTINGS.build("multi-vector index"),
      checkpoint_step=restored.step, run=runs.run_identity(run.workdir), mesh=mesh,
      show_progress=sys.stderr.isatty())
  summary = dict(version=version.version, checkpoint_step=version.checkpoint_step,
                 kind=restored.config.kind, num_blocks=version.num_rows,
                 storage=version.storage_dtype, **version.details,
                 blocks_per_second=version.metadata["blocks_per_second"])
  print(f"published {version.directory}: {json.dumps(summary)}")


if __name__ == "__main__":
  cli.run(main, SETTINGS)

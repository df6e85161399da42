"""Growing an index with a grown block store: only the blocks the store added are embedded.

A store grown with `preprocess --grow_from` keeps its base's blocks first and names the base in
its lineage. The new index version is the newest version's embeddings followed by the new
blocks' embeddings (embedded in the same matmul dtype), and, when the version has a ScaNN
index, that index with the new rows upserted (its partitions and quantizer are not retrained). The new blocks must be embedded by the block encoder
that embedded the old ones (same run, checkpoint and block settings): one index of two encoders
would rank their blocks on different scales.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from absl import logging

from orqa_realm.core import run_directory
from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import BlockStore
from orqa_realm.encode import embedding, runs
from orqa_realm.index.handle import open_index
from orqa_realm.index.scann_index import MIN_ROWS_FOR_TREE
from orqa_realm.index.storage import IndexVersion
from orqa_realm.modeling import retriever


def check_same_block_encoder(version: IndexVersion, config: retriever.RetrieverConfig,
                             tokenizer_fingerprint: str, checkpoint_step: int | None,
                             run: dict[str, Any] | None) -> None:
  """Refuses to add embeddings to `version` from another block encoder than the one that made it:
  another run or checkpoint (or pretrained weights for a run's), or other block settings."""
  recorded = runs.indexed_run(version)
  same_run = (recorded is None and run is None) or (
      recorded is not None and run is not None
      and run_directory.is_same_run(recorded, run["workdir"], run.get("run_id")))
  if not same_run or version.checkpoint_step != checkpoint_step:
    made_by = ("pretrained weights" if recorded is None else
               f"checkpoint {version.checkpoint_step} of the run {recorded['workdir']}")
    given = ("pretrained weights" if run is None else
             f"checkpoint {checkpoint_step} of the run {run['workdir']}")
    raise InputError(f"the index's newest version was embedded by {made_by}; the new blocks "
                     f"would be embedded by {given}: pass that run and checkpoint "
                     "(--workdir, --checkpoint_step), or embed every block without --grow",
                     path=version.directory)
  embedding.check_query_encoder(version, config, tokenizer_fingerprint,
                                fields=retriever.BLOCK_ENCODER_FIELDS)


def grow_and_publish(store: BlockStore, params: Any, config: retriever.RetrieverConfig,
                     index: embedding.IndexConfig, *, checkpoint_step: int | None,
                     run: dict[str, Any] | None, mesh=None,
                     show_progress: bool = False) -> IndexVersion:
  """Publishes a version of `index.index_dir` for `store`, grown from the store of its newest
  version, embedding only the added blocks (see the module docstring)."""
  root = index.root()
  latest = root.latest()
  if latest is None:
    raise InputError("no index version to grow: embed the store without --grow first",
                     path=index.index_dir, field="index_dir")
  if latest.store_fingerprint == store.fingerprint:
    raise InputError(f"the index's newest version (version {latest.version}) already holds "
                     f"every block of {store.directory}: nothing to add", path=index.index_dir)
  base = store.ancestor(latest.store_fingerprint)
  if base is None:
    raise InputError(f"the index's newest version embeds the block store "
                     f"{latest.store_fingerprint}, which --block_store {store.directory} did not "
                     f"grow from (its lineage: {[e['fingerprint'] for e in store.lineage]})",
                     path=index.index_dir, field="block_store")
  if base["num_blocks"] != latest.num_rows:
    raise InputError(f"the index's newest version holds {latest.num_rows} rows, its store "
                     f"{base['num_blocks']} blocks", path=latest.directory)
  check_same_block_encoder(latest, config, store.tokenizer_fingerprint, checkpoint_step, run)
  if index.backend == "scann" and latest.scann_config is None:
    raise InputError("the index's newest version has no ScaNN index to grow: embed every block "
                     "with --index_backend=scann", path=latest.directory)
  embedding.check_publishable(root, config, store)
  # As the old blocks were: bfloat16 and float32 embeddings of one encoder differ by more than
  # a ranking tolerates at its top.
  dtype = index.embedding.embed_dtype
  if latest.metadata.get("embed_dtype", dtype) != dtype:
    raise InputError(f"the index's newest version was embedded in "
                     f"{latest.metadata['embed_dtype']}, the new blocks would be in {dtype}: pass "
                     f"--embed_dtype={latest.metadata['embed_dtype']}", path=latest.directory,
                     field="embed_dtype")
  started = time.time()
  added = embedding.embed_blocks(
      store, params, config, batch_size=index.embedding.embed_batch_size,
      dtype=index.embedding.dtype, mesh=mesh, show_progress=show_progress,
      rows=np.arange(latest.num_rows, len(store)))
  embed_seconds = time.time() - started
  # A ScaNN index of the version grows with it, whichever backend this command searches with.
  loaded = open_index(latest, backend="scann" if latest.scann_config else "exact")
  scann_searcher = None
  if latest.scann_config is not None:
    scann_searcher = loaded.searcher.with_rows_added(added)
    if latest.scann_config.num_leaves == 0 and len(store) >= MIN_ROWS_FOR_TREE:
      logging.warning("the ScaNN index has no tree (it was built on %d rows); grown to %d rows it "
                      "still searches every row: re-embed with --index_backend=scann, without "
                      "--grow, for a tree", latest.num_rows, len(store))
  return root.publish(
      np.concatenate([loaded.embeddings, added]), store_fingerprint=store.fingerprint,
      checkpoint_step=checkpoint_step, storage_dtype=latest.storage_dtype,
      scann_searcher=scann_searcher,
      metadata=dict(latest.metadata, embed_seconds=round(embed_seconds, 2),
                    blocks_per_second=round(len(added) / max(embed_seconds, 1e-9), 1),
                    grown_from=dict(version=latest.version, num_rows=latest.num_rows,
                                    store_fingerprint=latest.store_fingerprint),
                    embed_dtype=dtype))

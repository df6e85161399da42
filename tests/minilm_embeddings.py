"""Run in a subprocess at XLA's full optimisation (`tests.conftest.run_optimised`): MiniLM's
embeddings (mean pooling, as trained) of the SQuAD blocks cut to 64 wordpieces and of 300 of the
slice's questions, for the `squad_minilm_embeddings` fixture.

Arguments: the block store's directory, MiniLM's directory, the SQuAD file and the .npz file
to write (`blocks` [blocks, 384], `queries` [300, 384]), written whole or not at all. Prints one
JSON line with the two shapes. (It does not import tests.conftest, which would set the tests'
XLA flags before XLA starts.)
"""

import json
import os
import sys

import jax
import numpy as np

from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.qa import read_squad
from orqa_realm.data.tokenization import Tokenizer
from orqa_realm.encode.embedding import embed_blocks
from orqa_realm.modeling import retriever
from orqa_realm.modeling.hf_import import load_hf_bert


def embedded_questions(squad_path: str) -> list:
  """The 300 questions embedded: every 27th of the file's."""
  return read_squad(squad_path)[::27][:300]


def main(store_dir: str, minilm_dir: str, squad_path: str,
         output: str) -> dict[str, list[int]]:
  hf = load_hf_bert(minilm_dir)
  config = retriever.RetrieverConfig(hf.config, projection_size=0, pooling="mean",
                                     share_encoders=True, block_format="joined",
                                     block_length=64)
  params = retriever.init_params(config, jax.random.key(0), hf.params)
  blocks = embed_blocks(BlockStore(store_dir), params, config, batch_size=64,
                        dtype=jax.numpy.float32)  # [blocks, 384]
  questions = embedded_questions(squad_path)
  queries = Tokenizer(minilm_dir).encode_queries([q.question for q in questions], max_length=32)
  query_embeddings = np.asarray(retriever.DualEncoder(config).apply(
      {"params": params}, queries, method=retriever.DualEncoder.embed_queries))  # [300, 384]
  partial = f"{output}.partial.npz"
  np.savez(partial, blocks=blocks, queries=query_embeddings)
  os.replace(partial, output)
  return dict(blocks=list(blocks.shape), queries=list(query_embeddings.shape))


if __name__ == "__main__":
  print(json.dumps(main(*sys.argv[1:])))

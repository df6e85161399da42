"""Corpus embedding throughput: our `embed_blocks` pipeline against PyTorch on the same blocks.

    python benchmarks/embed.py [--num_documents=200 --block_length=128 --embed_batch_size=128]
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python benchmarks/embed.py  # 2 devices

Both sides embed the same real SQuAD blocks (the first `--num_documents` paragraphs of the bundled
slice) with the same MiniLM weights (CLS pooling, no projection) and the same batches: ours
orders the blocks by length and pads each batch to its own longest block (rounded up to 32), and
PyTorch is given exactly those batches, so the comparison is the model and the pipeline, not the
padding. Ours is timed end to end (packing, dispatch, transfer back), after one untimed pass that
compiles every batch shape. The table gives blocks/s, the ratio to PyTorch, achieved GFLOP/s on
the padded tokens, its share of the best matmul rate measured on this machine in the same run,
and the largest difference of our embeddings from PyTorch float32.
"""

from __future__ import annotations

import itertools
import os
import tempfile

from absl import flags

from common import (DEMO_SQUAD, bert_forward_flops, best_seconds, measured_peak_flops,
                    print_table, refuse_flags)
from orqa_realm import cli
from orqa_realm.core.config import FlagBinder
from orqa_realm.data.blocks import StoreSource
from orqa_realm.encode.embedding import EmbedSettings, embed_blocks, padded_block_batches
from orqa_realm.modeling.retriever import RetrieverConfig

# The library's settings, under the flags `python -m orqa_realm.embed` gives them: --bert,
# --block_length and --embed_batch_size are read; the model is fixed at CLS pooling without a
# projection (what PyTorch computes here), and both dtypes are timed.
SETTINGS = FlagBinder("benchmarks/embed.py")
SETTINGS.bind("store", StoreSource)
SETTINGS.bind("retriever", RetrieverConfig, RetrieverConfig(projection_size=0, pooling="cls"))
SETTINGS.bind("embedding", EmbedSettings)
_READ = frozenset({"bert", "block_length", "embed_batch_size"})

_NUM_DOCUMENTS = flags.DEFINE_integer(
    "num_documents", 200, "SQuAD paragraphs (the bundled slice's documents) to embed the blocks of.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed passes over the blocks (best is kept).")


def main():
  bound = frozenset().union(*(SETTINGS.group(name).flag_names
                              for name in ("store", "retriever", "embedding")))
  refuse_flags(SETTINGS, bound - _READ, "it embeds its own SQuAD blocks into --bert's CLS state, "
               "in both dtypes")

  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  import transformers

  from orqa_realm.data.blocks import build_block_store
  from orqa_realm.data.documents import load_documents
  from orqa_realm.data.pretrained import resolve_model_dir
  from orqa_realm.data.tokenization import Tokenizer
  from orqa_realm.modeling import partitioning, retriever
  from orqa_realm.modeling.hf_import import load_hf_bert

  model_dir = resolve_model_dir(SETTINGS.build("store").bert)
  batch_size = SETTINGS.build("embedding").embed_batch_size
  hf = load_hf_bert(model_dir)
  config = SETTINGS.build("retriever", bert=hf.config)
  block_length = config.block_length
  params = partitioning.unbox(retriever.init_params(config, jax.random.key(0), hf.params))
  batch_size = -(-batch_size // jax.device_count()) * jax.device_count()

  with tempfile.TemporaryDirectory() as scratch:
    documents = itertools.islice(load_documents(f"squad:{DEMO_SQUAD}"), _NUM_DOCUMENTS.value)
    store = build_block_store(documents, Tokenizer(model_dir), os.path.join(scratch, "blocks"))
    # Exactly the batches `embed_blocks` runs, handed to PyTorch.
    batches = list(padded_block_batches(store, config, batch_size=batch_size))
    padded_tokens = sum(inputs.token_ids.size for _, inputs in batches)
    real_tokens = int(np.minimum(store.input_lengths(config.block_format), block_length).sum())
    flops = sum(bert_forward_flops(hf.config, inputs.token_ids.shape[1]) * batch_size
                for _, inputs in batches)
    torch_batches = [(blocks, dict(
        input_ids=torch.from_numpy(inputs.token_ids.astype(np.int64)),
        token_type_ids=torch.from_numpy(inputs.segment_ids.astype(np.int64)),
        attention_mask=torch.from_numpy(inputs.input_mask.astype(np.int64))))
                     for blocks, inputs in batches]

    results, outputs = [], {}
    for name, dtype in [("ours f32", jnp.float32), ("ours bf16", jnp.bfloat16)]:

      def embed(dtype=dtype, name=name):
        outputs[name] = embed_blocks(store, params, config, batch_size=batch_size, dtype=dtype)

      results.append((name, best_seconds(embed, _REPEATS.value)))

  torch.set_num_threads(os.cpu_count())
  torch_model = transformers.BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
  for name, autocast in [("PyTorch f32", False), ("PyTorch bf16 autocast", True)]:

    def embed_torch(autocast=autocast, name=name):
      embeddings = np.empty((len(store), config.embedding_size), np.float32)
      with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        for blocks, inputs in torch_batches:
          hidden = torch_model(**inputs).last_hidden_state[:len(blocks), 0]
          embeddings[blocks] = hidden.float().numpy()
      outputs[name] = embeddings

    results.append((name, best_seconds(embed_torch, _REPEATS.value)))

  peaks = measured_peak_flops(include_bf16=True)
  peak = max(peaks.values())
  seconds_by_name = dict(results)
  num_blocks = len(outputs["ours f32"])
  print_table(
      f"Embedding {num_blocks} SQuAD blocks (<= {block_length} wordpieces, {real_tokens:,} real "
      f"/ {padded_tokens:,} padded tokens in {len(batches)} batches of {batch_size}), MiniLM "
      f"{hf.config.num_hidden_layers} x {hf.config.hidden_size}, {jax.device_count()} "
      f"{jax.devices()[0].platform} device(s), {os.cpu_count()} cores, jax {jax.__version__}, "
      f"torch {torch.__version__}; measured matmul peaks (GFLOP/s): "
      + ", ".join(f"{name} {value / 1e9:.0f}" for name, value in peaks.items()),
      ["implementation", "blocks/s", "vs PyTorch bf16", "vs PyTorch f32", "GFLOP/s",
       "% of peak", "max |diff| vs PyTorch f32"],
      [[name, f"{num_blocks / seconds:.1f}",
        f"{seconds_by_name['PyTorch bf16 autocast'] / seconds:.2f}x",
        f"{seconds_by_name['PyTorch f32'] / seconds:.2f}x", f"{flops / seconds / 1e9:.1f}",
        f"{flops / seconds / peak:.1%}",
        f"{np.abs(outputs[name] - outputs['PyTorch f32']).max():.1e}"]
       for name, seconds in results])


if __name__ == "__main__":
  cli.run(main, SETTINGS)

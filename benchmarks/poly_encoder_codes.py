"""Whether a poly-encoder run's codes attend: the diagnosis behind the README's poly-encoder rows.

    python benchmarks/poly_encoder_codes.py --workdir=runs/poly_encoder_squad \
        --block_store=runs/blocks/squad_demo

For each checkpoint kept, over `--num_blocks` blocks spread evenly over the store: the codes'
mean norm (against the norm they were initialised at, sqrt(hidden) x initializer_range, from
normal(0, initializer_range)), the entropy of a code's
attention over a block's tokens as a fraction of the uniform distribution's (1.0: the code
mean-pools the block), and the mean cosine between a block's code vectors (1.0: the m vectors
are one). Uniform attention at every code means the poly-encoder is a single-vector retriever.
"""

from __future__ import annotations

import jax
import numpy as np
from absl import app, flags

from common import print_table

from orqa_realm.core import config as settings_lib
from orqa_realm.core import parallel
from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import StoreSource
from orqa_realm.data.multi_vector_inputs import MarkerIds
from orqa_realm.encode import runs
from orqa_realm.encode import multi_vector as encode
from orqa_realm.modeling import multi_vector

_WORKDIR = flags.DEFINE_string("workdir", "", "A poly-encoder run.")
_STEPS = flags.DEFINE_list("checkpoint_steps", [], "Checkpoints to read; empty: the newest.")
_NUM_BLOCKS = flags.DEFINE_integer("num_blocks", 32, "Blocks read, spread over the store.")

SETTINGS = settings_lib.FlagBinder("benchmarks/poly_encoder_codes.py")
SETTINGS.bind("store", StoreSource)


def code_statistics(params, config: multi_vector.PolyEncoderConfig, inputs) -> list[float]:
  """[code norm, attention entropy / uniform entropy, mean cosine of a block's vectors]."""
  model = multi_vector.MultiVectorEncoder(config)
  hidden = np.asarray(model.apply({"params": params}, inputs, True,
                                  method=lambda m, x, d: m._hidden(x, d)))  # [b, length, h]
  codes = np.asarray(params["codes"])  # [m, h]
  real = np.asarray(inputs.tokens.input_mask)[:, None, :] != 0  # [b, 1, length]
  logits = np.where(real, np.einsum("mh,blh->bml", codes, hidden), -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)  # [b, m, length]
  entropy = -np.sum(np.where(weights > 0, weights * np.log(np.maximum(weights, 1e-30)), 0.0), -1)
  uniform = np.log(real.sum(-1))  # [b, 1]
  vectors = np.asarray(model.apply({"params": params}, inputs, True,
                                   method=lambda m, x, d: m.encode_blocks(x, d)).vectors)
  unit = vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)  # [b, m, dim]
  cosines = np.einsum("bmd,bnd->bmn", unit, unit)
  m = unit.shape[1]
  off_diagonal = (cosines.sum((1, 2)) - np.trace(cosines, axis1=1, axis2=2)) / (m * m - m)
  return [float(np.linalg.norm(codes, axis=-1).mean()), float((entropy / uniform).mean()),
          float(off_diagonal.mean())]


def main(argv):
  del argv
  mesh = parallel.make_mesh()
  store, tokenizer = SETTINGS.build("store").open_store()
  steps = [int(step) for step in _STEPS.value] or [None]
  rows = []
  for step in steps:
    run = runs.restore_multi_vector_run(_WORKDIR.value, step, mesh)
    config = run.config
    if not isinstance(config, multi_vector.PolyEncoderConfig):
      raise InputError(f"{_WORKDIR.value} is a {config.kind} run, not a poly-encoder",
                       field="workdir")
    blocks = np.linspace(0, len(store) - 1, _NUM_BLOCKS.value).astype(int)
    inputs = encode.block_batch_inputs(store, blocks, config, MarkerIds.of(tokenizer),
                                       config.block_length)
    statistics = code_statistics(jax.device_get(run.params), config, inputs)
    rows.append([str(run.step), *(f"{value:.4f}" for value in statistics)])
  bert = config.bert
  initial_norm = np.sqrt(bert.hidden_size) * bert.initializer_range
  print_table(f"\n{_WORKDIR.value}: its {config.num_vectors} codes over {_NUM_BLOCKS.value} "
              f"blocks (initialised at norm {initial_norm:.4f}; uniform attention: 1.0)",
              ["checkpoint", "code norm", "attention entropy / uniform",
               "mean cosine of a block's vectors"], rows)


if __name__ == "__main__":
  SETTINGS.define()
  app.run(main)

"""Writing our Flax BERT params as a Hugging Face BERT checkpoint (config.json +
model.safetensors): the inverse of `hf_import`, through the same name table, so that PyTorch
`transformers` (BertModel.from_pretrained) and sentence-transformers load what we trained."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from orqa_realm.modeling.bert import BertConfig, unstack_layers
from orqa_realm.modeling.hf_import import flax_path

_LAYER_TENSORS = (
    [f"attention.self.{name}.{leaf}" for name in ("query", "key", "value")
     for leaf in ("weight", "bias")]
    + [f"{module}.{leaf}" for module in ("attention.output.dense", "attention.output.LayerNorm",
                                         "intermediate.dense", "output.dense", "output.LayerNorm")
       for leaf in ("weight", "bias")])


def hf_tensor_names(config: BertConfig) -> list[str]:
  """The tensor names of a Hugging Face BertModel of `config` (without a 'bert.' prefix)."""
  names = [f"embeddings.{kind}_embeddings.weight" for kind in ("word", "position", "token_type")]
  names += ["embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"]
  names += [f"encoder.layer.{layer}.{name}" for layer in range(config.num_hidden_layers)
            for name in _LAYER_TENSORS]
  return names + ["pooler.dense.weight", "pooler.dense.bias"]


def bert_tensors(params: dict[str, Any], config: BertConfig) -> dict[str, np.ndarray]:
  """{Hugging Face name: float32 array} of BertModel params (scanned or not)."""
  params = jax.device_get(params)
  if config.scan_layers:
    params = unstack_layers(params)
  flat = {path: np.asarray(value, np.float32)
          for path, value in traverse_util.flatten_dict(params).items()}
  tensors, used = {}, set()
  for name in hf_tensor_names(config):
    path, transpose = flax_path(name)
    # A Flax Dense kernel is [in, out]; PyTorch Linear stores [out, in].
    tensors[name] = np.ascontiguousarray(flat[path].T if transpose else flat[path])
    used.add(path)
  if unused := sorted("/".join(path) for path in flat.keys() - used):
    raise ValueError(f"BERT params without a Hugging Face name: {unused}")
  return tensors


def hf_config(config: BertConfig) -> dict[str, Any]:
  """config.json of a Hugging Face BertModel of `config`."""
  values = {name: value for name, value in config.to_dict().items() if name != "scan_layers"}
  return dict(values, model_type="bert", architectures=["BertModel"],
              position_embedding_type="absolute")


def save_hf_bert(directory: str, params: dict[str, Any], config: BertConfig) -> None:
  """Writes config.json and model.safetensors of BertModel `params` into `directory`."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top

  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
    json.dump(hf_config(config), f, indent=2)
  save_file(bert_tensors(params, config), os.path.join(directory, "model.safetensors"),
            metadata={"format": "pt"})

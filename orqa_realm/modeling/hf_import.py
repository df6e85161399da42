"""Loading a local Hugging Face BERT checkpoint (config.json + weights) into our Flax params.

Weights are read from `model.safetensors` with the safetensors NumPy API, or from
`pytorch_model.bin` when PyTorch is installed. Every tensor name is mapped through a short table;
anything missing, unexpected or of the wrong shape is reported together in one error naming the
file and the tensors. Tensors map onto the loop's layout (`layer_3/...`), then are stacked when
the config scans its layers (`bert.stack_layers`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, NamedTuple

import numpy as np
from absl import logging
from flax import traverse_util

from orqa_realm.core.errors import InputError
from orqa_realm.data.files import read_json
from orqa_realm.modeling.bert import BertConfig, parameter_shapes, stack_layers

# Heads of BertFor* models (MLM, NSP): not part of the encoder, returned separately.
_HEAD_PREFIXES = ("cls.",)
# Buffers some checkpoints save that are not parameters.
_IGNORED = re.compile(r"embeddings\.position_ids")

_LAYER_NORM = {"weight": "scale", "gamma": "scale", "bias": "bias", "beta": "bias"}
_DENSE = {"weight": "kernel", "bias": "bias"}

# (Hugging Face name pattern, Flax path template, parameter kind)
_NAME_TABLE = [
    (r"embeddings\.(word|position|token_type)_embeddings\.weight",
     "embeddings/{0}_embeddings/embedding", "embedding"),
    (r"embeddings\.LayerNorm\.(weight|bias|gamma|beta)", "embeddings/layer_norm", "layer_norm"),
    (r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)",
     "layer_{0}/attention/{1}", "dense"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)",
     "layer_{0}/attention/output", "dense"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.(weight|bias|gamma|beta)",
     "layer_{0}/attention_layer_norm", "layer_norm"),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)", "layer_{0}/intermediate", "dense"),
    (r"encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)", "layer_{0}/output", "dense"),
    (r"encoder\.layer\.(\d+)\.output\.LayerNorm\.(weight|bias|gamma|beta)",
     "layer_{0}/output_layer_norm", "layer_norm"),
    (r"pooler\.dense\.(weight|bias)", "pooler", "dense"),
]
_COMPILED_TABLE = [(re.compile(pattern), template, kind)
                   for pattern, template, kind in _NAME_TABLE]


class HFBert(NamedTuple):
  config: BertConfig
  params: dict[str, Any]  # nested Flax params of BertModel(config), float32 numpy arrays
  head_tensors: dict[str, np.ndarray]  # tensors of heads (e.g. 'cls.predictions.bias'), unmapped
  initialised: tuple[str, ...] = ()  # parts the checkpoint lacks, freshly initialised ('pooler')


def initial_pooler(config: BertConfig) -> dict[str, np.ndarray]:
  """BERT's initialisation of a pooler (kernel N(0, initializer_range), bias 0), seeded: for a
  checkpoint saved without one (`BertForMaskedLM`), as `transformers` does on loading it."""
  kernel = np.random.default_rng(0).normal(
      0.0, config.initializer_range, (config.hidden_size, config.hidden_size))
  return dict(kernel=kernel.astype(np.float32), bias=np.zeros(config.hidden_size, np.float32))


def flax_path(hf_name: str) -> tuple[tuple[str, ...], bool] | None:
  """The Flax parameter path of a Hugging Face tensor name, and whether to transpose it.

  Returns None for names outside the encoder.
  """
  for pattern, template, kind in _COMPILED_TABLE:
    match = pattern.fullmatch(hf_name)
    if not match:
      continue
    groups = match.groups()
    if kind == "embedding":
      return tuple(template.format(*groups).split("/")), False
    leaf = (_LAYER_NORM if kind == "layer_norm" else _DENSE)[groups[-1]]
    path = tuple(template.format(*groups[:-1]).split("/")) + (leaf,)
    # PyTorch Linear stores [out, in]; a Flax Dense kernel is [in, out].
    return path, kind == "dense" and leaf == "kernel"
  return None


def read_config_json(model_dir: str) -> tuple[str, dict[str, Any]]:
  """(path, values) of config.json in a Hugging Face model directory."""
  path = os.path.join(model_dir, "config.json")
  if not os.path.isfile(path):
    raise InputError("no config.json in the model directory", path=model_dir)
  return path, read_json(path)


def read_config(model_dir: str) -> BertConfig:
  """Reads config.json of a Hugging Face BERT directory."""
  path, values = read_config_json(model_dir)
  if values.get("model_type", "bert") != "bert":
    raise InputError(f"expected a BERT model, got model_type {values['model_type']!r}",
                     path=path, field="model_type")
  if values.get("position_embedding_type", "absolute") != "absolute":
    raise InputError("only absolute position embeddings are supported",
                     path=path, field="position_embedding_type")
  try:
    return BertConfig.from_dict(values)
  except ValueError as e:
    raise InputError(str(e), path=path) from e


def read_tensors(model_dir: str) -> tuple[str, dict[str, np.ndarray]]:
  """Reads all tensors of a checkpoint as float32 numpy arrays; returns (file, tensors)."""
  safetensors_path = os.path.join(model_dir, "model.safetensors")
  torch_path = os.path.join(model_dir, "pytorch_model.bin")
  if os.path.isfile(safetensors_path):
    from safetensors.numpy import load_file

    return safetensors_path, {name: np.asarray(tensor, dtype=np.float32)
                              for name, tensor in load_file(safetensors_path).items()}
  if os.path.isfile(torch_path):
    try:
      import torch
    except ImportError as e:
      raise InputError("pytorch_model.bin needs PyTorch to read; convert it to "
                       "model.safetensors or install torch", path=torch_path) from e
    state = torch.load(torch_path, map_location="cpu", weights_only=True)
    return torch_path, {name: tensor.float().numpy() for name, tensor in state.items()}
  raise InputError("no model.safetensors or pytorch_model.bin in the model directory",
                   path=model_dir)


def convert_tensors(config: BertConfig, tensors: dict[str, np.ndarray],
                    source: str) -> tuple[dict[str, Any], dict[str, np.ndarray], tuple[str, ...]]:
  """Maps Hugging Face tensors onto `BertModel(config)` params; returns (params, head tensors,
  the parts initialised because the checkpoint has none of them: only the pooler may be)."""
  loop_shapes = parameter_shapes(dataclasses.replace(config, scan_layers=False))
  expected = {path: shape.shape
              for path, shape in traverse_util.flatten_dict(loop_shapes).items()}
  converted: dict[tuple[str, ...], np.ndarray] = {}
  heads: dict[str, np.ndarray] = {}
  unexpected, misshaped = [], []
  seen: set[tuple[str, ...]] = set()
  for name, tensor in tensors.items():
    # Encoders saved from BertFor* models carry a 'bert.' prefix.
    short_name = name.removeprefix("bert.")
    if short_name.startswith(_HEAD_PREFIXES):
      heads[short_name] = tensor
      continue
    if _IGNORED.fullmatch(short_name):
      continue
    mapped = flax_path(short_name)
    if mapped is None or mapped[0] not in expected:
      unexpected.append(name)
      continue
    path, transpose = mapped
    seen.add(path)
    value = tensor.T if transpose else tensor
    if value.shape != expected[path]:
      misshaped.append(f"{name}: shape {tuple(tensor.shape)}, expected "
                       f"{expected[path][::-1] if transpose else expected[path]}")
      continue
    converted[path] = np.ascontiguousarray(value)
  initialised = ()
  pooler = {path for path in expected if path[0] == "pooler"}
  if pooler and not pooler & seen:
    converted.update({("pooler", name): value for name, value in initial_pooler(config).items()})
    seen |= pooler
    initialised = ("pooler",)
  missing = sorted("/".join(path) for path in expected.keys() - seen)
  problems = []
  if missing:
    problems.append(f"missing tensors for {missing}")
  if misshaped:
    problems.append(f"mis-shaped tensors {misshaped}")
  if unexpected:
    problems.append(f"unexpected tensors {sorted(unexpected)}")
  if problems:
    raise InputError("; ".join(problems) + f" (for the architecture in config.json: {config})",
                     path=source)
  params = traverse_util.unflatten_dict(converted)
  if config.scan_layers:
    params = stack_layers(params, config.num_hidden_layers)
  return params, heads, initialised


def load_hf_bert(model_dir: str | os.PathLike) -> HFBert:
  """Loads a local Hugging Face BERT directory (config.json + weights) as Flax params."""
  model_dir = os.fspath(model_dir)
  if not os.path.isdir(model_dir):
    raise InputError("no such model directory", path=model_dir)
  config = read_config(model_dir)
  source, tensors = read_tensors(model_dir)
  params, heads, initialised = convert_tensors(config, tensors, source)
  if initialised:
    logging.warning("%s has no %s weights: initialised as BERT initialises them", source,
                    " or ".join(initialised))
  return HFBert(config=config, params=params, head_tensors=heads, initialised=initialised)

"""Loading a llama-architecture LM into `decoder.DecoderLM` params: from a GGUF file (llama.cpp's
format, read and dequantised with the `gguf` package) or from a Hugging Face llama directory
(config.json + model.safetensors).

llama.cpp's converter permutes the rows of the query and key projections so that its rotary
embedding can rotate adjacent pairs; Hugging Face's (and ours) rotates the two halves of each
head, so the GGUF rows are permuted back (`unpermute_rotary_rows`). Every tensor is checked
against the architecture; anything missing, unexpected, mis-shaped or of an unsupported type is
reported in one error naming the file and the tensors.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from flax import traverse_util

from orqa_realm.core.errors import InputError
from orqa_realm.modeling.decoder import DecoderConfig, parameter_shapes
from orqa_realm.modeling.hf_import import read_config_json

# GGUF tensor types read here: float ones and the block quantisations whose dequantisation the
# tests check against `gguf.quants.quantize`.
SUPPORTED_GGUF_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")

# (GGUF name pattern, Hugging Face name pattern, Flax path under `layers` or the root). A
# captured layer index selects the row of the stacked `layers` parameter.
_TENSORS = [
    (r"token_embd\.weight", r"model\.embed_tokens\.weight", "embed_tokens/embedding"),
    (r"output_norm\.weight", r"model\.norm\.weight", "norm/scale"),
    (r"output\.weight", r"lm_head\.weight", "lm_head/kernel"),
    (r"blk\.(\d+)\.attn_norm\.weight", r"model\.layers\.(\d+)\.input_layernorm\.weight",
     "layers/attention_norm/scale"),
    (r"blk\.(\d+)\.attn_q\.weight", r"model\.layers\.(\d+)\.self_attn\.q_proj\.weight",
     "layers/attention/query/kernel"),
    (r"blk\.(\d+)\.attn_k\.weight", r"model\.layers\.(\d+)\.self_attn\.k_proj\.weight",
     "layers/attention/key/kernel"),
    (r"blk\.(\d+)\.attn_v\.weight", r"model\.layers\.(\d+)\.self_attn\.v_proj\.weight",
     "layers/attention/value/kernel"),
    (r"blk\.(\d+)\.attn_output\.weight", r"model\.layers\.(\d+)\.self_attn\.o_proj\.weight",
     "layers/attention/output/kernel"),
    (r"blk\.(\d+)\.ffn_norm\.weight", r"model\.layers\.(\d+)\.post_attention_layernorm\.weight",
     "layers/mlp_norm/scale"),
    (r"blk\.(\d+)\.ffn_gate\.weight", r"model\.layers\.(\d+)\.mlp\.gate_proj\.weight",
     "layers/gate/kernel"),
    (r"blk\.(\d+)\.ffn_up\.weight", r"model\.layers\.(\d+)\.mlp\.up_proj\.weight",
     "layers/up/kernel"),
    (r"blk\.(\d+)\.ffn_down\.weight", r"model\.layers\.(\d+)\.mlp\.down_proj\.weight",
     "layers/down/kernel"),
]
_GGUF_NAMES = [(re.compile(gguf_name), path) for gguf_name, _, path in _TENSORS]
_HF_NAMES = [(re.compile(hf_name), path) for _, hf_name, path in _TENSORS]
# Buffers some Hugging Face checkpoints save that are not parameters.
_HF_IGNORED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")


class PretrainedDecoder(NamedTuple):
  config: DecoderConfig
  params: dict[str, Any]  # nested params of DecoderLM(config), float32 numpy arrays
  source: str  # the file read


def unpermute_rotary_rows(weight: np.ndarray, heads: int) -> np.ndarray:
  """Undoes llama.cpp's row permutation of a query or key projection ([heads x head_dim, in]):
  its rows within a head are interleaved pairs (x_0, x_{d/2}, x_1, ...); ours are halves."""
  rows = weight.shape[0]
  return (weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:])
          .swapaxes(1, 2).reshape(weight.shape))


def _assemble(config: DecoderConfig, named: dict[str, np.ndarray],
              table: list[tuple[re.Pattern, str]], source: str,
              transform: Callable[[str, str, np.ndarray], np.ndarray] = lambda n, p, t: t,
              problems: list[str] | None = None) -> dict[str, Any]:
  """Maps tensors ([out, in] as PyTorch stores them) onto `DecoderLM(config)` params.

  `transform(name, flax_path, tensor)` is applied before the layout change; `problems` carries
  problems found before (unsupported types), reported with the rest.
  """
  expected = {"/".join(path): shape.shape
              for path, shape in traverse_util.flatten_dict(parameter_shapes(config)).items()}
  problems = list(problems or [])
  layers: dict[str, dict[int, np.ndarray]] = {}
  flat: dict[str, np.ndarray] = {}
  unexpected, misshaped = [], []
  for name, tensor in named.items():
    match = next(((pattern.fullmatch(name), path) for pattern, path in table
                  if pattern.fullmatch(name)), None)
    if match is None or match[1] not in expected:
      unexpected.append(name)
      continue
    groups, path = match[0].groups(), match[1]
    value = transform(name, path, tensor)
    if path.endswith("kernel"):
      value = value.T  # a Flax kernel is [in, out]
    want = expected[path][1:] if groups else expected[path]
    if value.shape != want:
      misshaped.append(f"{name}: shape {tuple(tensor.shape)}")
      continue
    if groups:
      index = int(groups[0])
      if index >= config.num_hidden_layers:
        unexpected.append(name)
        continue
      layers.setdefault(path, {})[index] = value
    else:
      flat[path] = value
  for path, rows in layers.items():
    if len(rows) == config.num_hidden_layers:
      flat[path] = np.stack([rows[index] for index in range(config.num_hidden_layers)])
    else:
      missing_layers = sorted(set(range(config.num_hidden_layers)) - rows.keys())
      problems.append(f"{path} missing for layers {missing_layers}")
  missing = sorted(set(expected) - set(flat) - set(layers))
  if missing:
    problems.append(f"missing tensors for {missing}")
  if misshaped:
    problems.append(f"mis-shaped tensors {misshaped}")
  if unexpected:
    problems.append(f"unexpected tensors {sorted(unexpected)}")
  if problems:
    raise InputError("; ".join(problems) + f" (for the architecture {config})", path=source)
  return traverse_util.unflatten_dict({tuple(path.split("/")): np.ascontiguousarray(value,
                                                                                   np.float32)
                                       for path, value in flat.items()})


def _gguf_value(field) -> Any:
  """A GGUF metadata field's value (a scalar, a string or a list)."""
  return field.contents()


def gguf_config(fields: dict[str, Any], tensor_names: set[str], source: str) -> DecoderConfig:
  """The architecture in a GGUF's metadata; refuses any architecture but llama."""
  def field(key, default=None):
    if key in fields:
      return _gguf_value(fields[key])
    if default is None:
      raise InputError("missing metadata", path=source, field=key)
    return default

  architecture = field("general.architecture")
  if architecture != "llama":
    raise InputError(f"unsupported architecture {architecture!r} (only 'llama' is read)",
                     path=source, field="general.architecture")
  heads = int(field("llama.attention.head_count"))
  hidden = int(field("llama.embedding_length"))
  rope_dims = int(field("llama.rope.dimension_count", hidden // heads))
  if rope_dims != hidden // heads:
    raise InputError(f"rotary embeddings over {rope_dims} of {hidden // heads} head dimensions "
                     "are not supported", path=source, field="llama.rope.dimension_count")
  vocab = len(fields["tokenizer.ggml.tokens"].data) if "tokenizer.ggml.tokens" in fields else None
  try:
    return DecoderConfig(
        vocab_size=int(field("llama.vocab_size", vocab)),
        hidden_size=hidden,
        intermediate_size=int(field("llama.feed_forward_length")),
        num_hidden_layers=int(field("llama.block_count")),
        num_attention_heads=heads,
        num_key_value_heads=int(field("llama.attention.head_count_kv", heads)),
        rms_norm_eps=float(field("llama.attention.layer_norm_rms_epsilon")),
        rope_theta=float(field("llama.rope.freq_base", 10000.0)),
        max_position_embeddings=int(field("llama.context_length")),
        tie_word_embeddings="output.weight" not in tensor_names)
  except ValueError as e:
    raise InputError(str(e), path=source) from e


def load_gguf(path: str | os.PathLike) -> PretrainedDecoder:
  """Reads a llama GGUF file, dequantising its tensors to float32."""
  from gguf import GGUFReader
  from gguf.quants import dequantize

  path = os.fspath(path)
  if not os.path.isfile(path):
    raise InputError("no such GGUF file", path=path)
  try:
    reader = GGUFReader(path)
  except (ValueError, OSError) as e:
    raise InputError(f"not a readable GGUF file: {e}", path=path) from e
  config = gguf_config(reader.fields, {tensor.name for tensor in reader.tensors}, path)
  tensors, unsupported = {}, []
  for tensor in reader.tensors:
    kind = tensor.tensor_type.name
    if kind not in SUPPORTED_GGUF_TYPES:
      unsupported.append(f"{tensor.name}: type {kind}")
      continue
    # [out, in] float32, as PyTorch stores a Linear's weight.
    tensors[tensor.name] = np.asarray(dequantize(tensor.data, tensor.tensor_type), np.float32)
  problems = [f"unsupported tensor types {unsupported} (read: {list(SUPPORTED_GGUF_TYPES)})"
              ] if unsupported else []

  def unpermute(name, flax_path, tensor):
    if flax_path == "layers/attention/query/kernel":
      return unpermute_rotary_rows(tensor, config.num_attention_heads)
    if flax_path == "layers/attention/key/kernel":
      return unpermute_rotary_rows(tensor, config.num_key_value_heads)
    return tensor

  params = _assemble(config, tensors, _GGUF_NAMES, path, unpermute, problems)
  return PretrainedDecoder(config=config, params=params, source=path)


def hf_llama_config(model_dir: str) -> DecoderConfig:
  """Reads config.json of a Hugging Face llama directory."""
  path, values = read_config_json(model_dir)
  if values.get("model_type") != "llama":
    raise InputError(f"expected a llama model, got model_type {values.get('model_type')!r}",
                     path=path, field="model_type")
  for flag in ("attention_bias", "mlp_bias"):
    if values.get(flag):
      raise InputError(f"{flag} is not supported", path=path, field=flag)
  if values.get("hidden_act", "silu") != "silu":
    raise InputError(f"hidden_act {values['hidden_act']!r} is not supported (silu)", path=path,
                     field="hidden_act")
  rope = values.get("rope_parameters") or values.get("rope_scaling") or {}
  if rope.get("rope_type", rope.get("type", "default")) != "default":
    raise InputError(f"rope scaling {rope} is not supported", path=path, field="rope_scaling")
  values = dict(values, rope_theta=values.get("rope_theta", rope.get("rope_theta", 10000.0)))
  values.setdefault("num_key_value_heads", values.get("num_attention_heads"))
  try:
    return DecoderConfig.from_dict(values)
  except (TypeError, ValueError) as e:
    raise InputError(str(e), path=path) from e


def load_hf_llama(model_dir: str | os.PathLike) -> PretrainedDecoder:
  """Reads a Hugging Face llama directory (config.json + model.safetensors)."""
  from safetensors.numpy import load_file

  model_dir = os.fspath(model_dir)
  config = hf_llama_config(model_dir)
  path = os.path.join(model_dir, "model.safetensors")
  if not os.path.isfile(path):
    raise InputError("no model.safetensors in the model directory", path=model_dir)
  tensors = {name: np.asarray(tensor, np.float32) for name, tensor in load_file(path).items()
             if not _HF_IGNORED.fullmatch(name)}
  if config.tie_word_embeddings:
    tensors.pop("lm_head.weight", None)  # some checkpoints save the tied copy
  params = _assemble(config, tensors, _HF_NAMES, path)
  return PretrainedDecoder(config=config, params=params, source=path)


def load_decoder(path: str | os.PathLike) -> PretrainedDecoder:
  """A GGUF file or a Hugging Face llama directory."""
  path = os.fspath(path)
  return load_hf_llama(path) if os.path.isdir(path) else load_gguf(path)

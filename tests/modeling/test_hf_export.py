"""Our BERT params written as a Hugging Face checkpoint read back to the same params, and load in
PyTorch `transformers` with the same hidden states."""

import dataclasses

import jax
import numpy as np

from orqa_realm.modeling import bert, partitioning
from orqa_realm.modeling.hf_export import save_hf_bert
from orqa_realm.modeling.hf_import import load_hf_bert
from tests.tasks.tiny_ict import TINY_BERT


def random_bert(config):
  model = bert.BertModel(config)
  ids = np.arange(1, 13, dtype=np.int32).reshape(2, 6)
  params = partitioning.unbox(model.init(jax.random.key(1), ids, np.zeros_like(ids),
                                         np.ones_like(ids))["params"])
  return model, params, ids


def layer_by_layer(params, config):
  return bert.unstack_layers(params) if config.scan_layers else params


def test_an_export_reads_back_to_the_same_params(tmp_path):
  for scan_layers in (True, False):
    config = dataclasses.replace(TINY_BERT, scan_layers=scan_layers)
    _, params, _ = random_bert(config)
    save_hf_bert(str(tmp_path / str(scan_layers)), params, config)
    loaded = load_hf_bert(str(tmp_path / str(scan_layers)))
    assert dataclasses.replace(loaded.config, scan_layers=scan_layers) == config
    jax.tree.map(np.testing.assert_array_equal, layer_by_layer(loaded.params, loaded.config),
                 layer_by_layer(jax.device_get(params), config))


def test_transformers_loads_the_export_with_the_same_hidden_states(tmp_path):
  import torch
  import transformers

  model, params, ids = random_bert(TINY_BERT)
  save_hf_bert(str(tmp_path), params, TINY_BERT)
  mask = np.array([[1] * 6, [1] * 4 + [0] * 2], np.int32)
  ours = model.apply({"params": params}, ids, np.zeros_like(ids), mask)
  torch_model = transformers.BertModel.from_pretrained(str(tmp_path)).eval()
  with torch.no_grad():
    theirs = torch_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
  np.testing.assert_allclose(np.asarray(ours.sequence_output)[mask == 1],
                             theirs.last_hidden_state.numpy()[mask == 1], atol=1e-5)
  np.testing.assert_allclose(np.asarray(ours.pooled_output), theirs.pooler_output.numpy(),
                             atol=1e-5)

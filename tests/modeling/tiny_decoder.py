"""A tiny random llama with SmolLM2's real tokenizer, as a Hugging Face directory: what plumbing
tests generate and score with (the real 135M decoder is for the slow parity tests)."""

from __future__ import annotations

import os


def make_tiny_decoder_dir(output_dir: str, seed: int = 0) -> str:
  """Writes config.json, model.safetensors and SmolLM2's tokenizer (vocabulary, merges, chat
  template) to `output_dir`: 2 layers, hidden 32, 4 query and 2 key-value heads."""
  import torch
  import transformers

  from orqa_realm.data.pretrained import resolve_decoder

  gguf_path = resolve_decoder("smollm2")
  tokenizer = transformers.AutoTokenizer.from_pretrained(
      os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path))
  torch.manual_seed(seed)
  config = transformers.LlamaConfig(
      vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
      tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
  transformers.LlamaForCausalLM(config).save_pretrained(output_dir, safe_serialization=True)
  tokenizer.save_pretrained(output_dir)
  return output_dir

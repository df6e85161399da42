"""Decoder generation throughput: our Flax llama (jitted prefill + while_loop of cached steps)
against PyTorch transformers' generate(), same GGUF weights, same prompts, greedy.

    python benchmarks/decoder_generation.py [--decoder=smollm2 --batch_size=8 --new_tokens=32]

The prompts are doc2query's: a chat turn asking SmolLM2 for a question about one SQuAD paragraph
of the bundled slice, left-padded into batches. Both sides generate exactly `--new_tokens` tokens
a prompt, so tokens/s compare: PyTorch with its end-of-sequence token suppressed
(`min_new_tokens`), ours by never stopping (an end token is emitted and generation goes on). The
first call of each is untimed (compilation, allocator). The last column is how many rows' greedy
tokens equal PyTorch's up to the row's first end-of-sequence token (where PyTorch, suppressing it,
takes the next best token instead).
Machines vary: only the ratios within one run compare.
"""

from __future__ import annotations

import gzip
import json
import os
import time

from absl import app, flags

from common import DEMO_SQUAD, machine_description, print_table

_DECODER = flags.DEFINE_string("decoder", "smollm2", "GGUF file, llama directory or packaged name.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Prompts per generate call.")
_BATCHES = flags.DEFINE_integer("batches", 2, "Timed generate calls per configuration.")
_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 32, "Tokens generated per prompt.")
_PASSAGE_CHARACTERS = flags.DEFINE_integer("passage_characters", 600,
                                           "Each prompt's paragraph, cut to this many characters.")


def squad_paragraphs(count: int, characters: int) -> list[str]:
  with gzip.open(DEMO_SQUAD, "rt", encoding="utf-8") as f:
    articles = json.load(f)["data"]
  paragraphs = [paragraph["context"][:characters] for article in articles
                for paragraph in article["paragraphs"]]
  return paragraphs[:count]


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  import transformers

  from orqa_realm.data.decoder_tokenization import DecoderTokenizer, pad_left
  from orqa_realm.data.pretrained import resolve_decoder
  from orqa_realm.modeling import decoder, generation, llama_import

  path = resolve_decoder(_DECODER.value)
  tokenizer = DecoderTokenizer(path)
  batch_size, new_tokens, batches = _BATCH_SIZE.value, _NEW_TOKENS.value, _BATCHES.value
  paragraphs = squad_paragraphs(batch_size * (batches + 1), _PASSAGE_CHARACTERS.value)
  prompts = [tokenizer.chat_prompt(f"Write one question that this passage answers.\n\n{text}")
             for text in paragraphs]
  prompt_batches = [pad_left(prompts[i:i + batch_size], tokenizer.pad_id)
                    for i in range(0, len(prompts), batch_size)]  # the first is the warm-up

  pretrained = llama_import.load_gguf(path) if os.path.isfile(path) else \
      llama_import.load_hf_llama(path)
  params = jax.device_put(pretrained.params)
  settings = generation.SamplingSettings(max_new_tokens=new_tokens)
  outputs, rows = {}, []

  def time_batches(generate_one) -> tuple[float, list[np.ndarray]]:
    generate_one(prompt_batches[0])
    started = time.perf_counter()
    generated = [generate_one(batch) for batch in prompt_batches[1:]]
    seconds = time.perf_counter() - started
    return seconds, generated

  for name, dtype in [("flax f32", jnp.float32), ("flax bf16", jnp.bfloat16)]:
    model = decoder.DecoderLM(pretrained.config, dtype=dtype)
    seconds, generated = time_batches(lambda batch, model=model: np.asarray(generation.generate(
        model, params, batch.token_ids, batch.input_mask, jax.random.key(0), settings=settings,
        eos_id=-1, pad_id=tokenizer.pad_id)))
    outputs[name] = np.concatenate(generated)
    rows.append((name, seconds))

  torch.set_num_threads(os.cpu_count())
  reference = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval() \
      if os.path.isfile(path) else transformers.AutoModelForCausalLM.from_pretrained(path).eval()

  def torch_generate(batch):
    with torch.no_grad():
      tokens = reference.generate(
          torch.as_tensor(batch.token_ids, dtype=torch.long),
          attention_mask=torch.as_tensor(batch.input_mask, dtype=torch.long),
          max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
          pad_token_id=tokenizer.pad_id)
    return tokens[:, batch.token_ids.shape[1]:].numpy()

  seconds, generated = time_batches(torch_generate)
  outputs["torch f32"] = np.concatenate(generated)
  rows.append(("torch f32", seconds))

  total_tokens = batches * batch_size * new_tokens
  torch_rate = total_tokens / rows[-1][1]
  table = []
  def same_rows(ours: np.ndarray, reference: np.ndarray) -> int:
    """Rows equal up to their first end-of-sequence token in `ours` (the whole row without)."""
    equal = 0
    for row, reference_row in zip(ours, reference):
      end = list(row).index(tokenizer.eos_id) if tokenizer.eos_id in row else len(row)
      equal += int(np.array_equal(row[:end], reference_row[:end]))
    return equal

  for name, seconds in rows:
    rate = total_tokens / seconds
    same = same_rows(outputs[name], outputs["torch f32"])
    table.append([name, f"{rate:.1f}", f"{rate / torch_rate:.2f}x",
                  f"{same}/{len(outputs[name])}"])
  prompt_length = np.mean([batch.token_ids.shape[1] for batch in prompt_batches[1:]])
  print_table(
      f"Greedy generation, {pretrained.config.num_hidden_layers}-layer llama "
      f"({os.path.basename(path)}), batches of {batch_size} prompts padded to "
      f"{prompt_length:.0f} tokens, {new_tokens} new tokens each; {machine_description()}, "
      f"JAX {jax.__version__}, PyTorch {torch.__version__}",
      ["implementation", "tokens/s", "vs torch", "rows equal to torch (to the end token)"],
      table)


if __name__ == "__main__":
  app.run(main)

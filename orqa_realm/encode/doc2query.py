"""doc2query (Nogueira et al. 2019; docTTTTTquery with T5): questions a block could answer,
sampled from a decoder LM, to be indexed with the block by BM25.

No seq2seq model is available offline, so the generator is the decoder (SmolLM2-Instruct by
default) asked in its own chat template for one question about the block; `questions_per_block`
samples of the same prompt give the variety docTTTTTquery gets from top-k sampling. Blocks go
through in chunks of `batch_blocks` (every question of a chunk in one batched `generate`
call), each chunk sampled from its own key (the seed folded with the chunk's index) and written
as soon as it is done (`data/expansions.py`), so a killed run resumes at the first missing chunk
and ends with what an uninterrupted run writes.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging

from orqa_realm.core import parallel
from orqa_realm.core.config import check_minimum, setting
from orqa_realm.core.errors import InputError
from orqa_realm.data import expansions as expansions_lib
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.decoder_tokenization import (DecoderTokenizer, check_prompt_template,
                                                   pad_left)
from orqa_realm.data.pretrained import model_fingerprint, resolve_decoder
from orqa_realm.encode import runs
from orqa_realm.modeling import decoder as decoder_lib
from orqa_realm.modeling import generation, llama_import

DEFAULT_PROMPT = ("Write one short question that the following passage answers. Reply with the "
                  "question only.\n\nTitle: {title}\nPassage: {text}")
# Prompts are left-padded to a multiple of this, so that few shapes are compiled.
PROMPT_LENGTH_BUCKET = 64


@dataclasses.dataclass(frozen=True)
class ExpansionConfig:
  """What generates a store's expansions, and how."""
  decoder: str = setting(
      "smollm2", "The decoder LM: a llama GGUF file, a Hugging Face llama directory, or a "
      "packaged model's name ('smollm2').")
  decoder_workdir: str = setting(
      "", "An lm_finetune run whose newest checkpoint generates instead of --decoder's weights "
      "(its tokenizer is the one it was fine-tuned with).")
  expansion_name: str = setting(
      "doc2query", "Name of the expansions, written to BLOCK_STORE/expansions/NAME (what "
      "--bm25_expansions reads).")
  questions_per_block: int = setting(5, "Questions sampled for each block.")
  max_new_tokens: int = setting(40, "Tokens generated at most for one question.")
  temperature: float = setting(0.7, "Sampling temperature (0: greedy, and then one question a "
                               "block is all there is).")
  top_p: float = setting(0.9, "Nucleus sampling: the smallest set of tokens of this mass.")
  seed: int = setting(0, "Seed of the sampling (each chunk folds in its index).")
  batch_blocks: int = setting(
      8, "Blocks per generate call (x --questions_per_block sequences); also the unit that a "
      "killed run resumes from.")
  prompt: str = setting(DEFAULT_PROMPT, "The user turn asking for a question; {title} and {text} "
                        "are replaced by the block's.")
  max_passage_tokens: int = setting(
      256, "A block's text is cut to this many decoder tokens in the prompt.")
  dtype: Literal["float32", "bfloat16"] = setting(
      "float32", "Compute dtype of the decoder's matrix products.")

  def __post_init__(self):
    for name in ("questions_per_block", "max_new_tokens", "batch_blocks", "max_passage_tokens"):
      check_minimum(name, getattr(self, name), 1)
    if self.temperature == 0 and self.questions_per_block > 1:
      raise InputError("greedy decoding (--temperature=0) gives one question a block, not "
                       f"{self.questions_per_block}", field="questions_per_block")
    check_prompt_template(self.prompt, "prompt")

  @property
  def sampling(self) -> generation.SamplingSettings:
    return generation.SamplingSettings(max_new_tokens=self.max_new_tokens,
                                       temperature=self.temperature, top_p=self.top_p)


def block_prompt(tokenizer: DecoderTokenizer, title: str, text: str, prompt: str,
                 max_passage_tokens: int) -> list[int]:
  """The chat prompt asking for a question about one block, its text cut to
  `max_passage_tokens` decoder tokens (what `lm_finetune` trains on, too)."""
  text_ids = tokenizer.tokenize([text])[0]
  if len(text_ids) > max_passage_tokens:
    text = tokenizer.decode(text_ids[:max_passage_tokens])
  return tokenizer.chat_prompt(prompt.format(title=title, text=text))


def clean_question(text: str) -> str:
  """A generated reply as one question: its first non-empty line, stripped."""
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  return lines[0] if lines else ""


class QuestionGenerator:
  """The decoder, its tokenizer and the jitted sampling of a batch of prompts."""

  def __init__(self, config: ExpansionConfig):
    self.config = config
    if config.decoder_workdir:
      run = runs.restore_decoder_run(config.decoder_workdir, None, parallel.make_mesh())
      self.path, decoder_config, self.params = run.source, run.config, run.params
      self.tokenizer = DecoderTokenizer(self.path)
      runs.check_tokenizer(run, self.tokenizer.fingerprint,
                           f"the decoder it started from ({self.path})")
      self.weights = dict(decoder_workdir=run.workdir, run_id=run.run_id, step=run.step)
    else:
      self.path = resolve_decoder(config.decoder)
      pretrained = llama_import.load_decoder(self.path)
      decoder_config, self.params = pretrained.config, jax.device_put(pretrained.params)
      self.tokenizer = DecoderTokenizer(self.path)
      self.weights = dict(decoder=os.path.basename(self.path),
                          decoder_fingerprint=model_fingerprint(self.path))
    self.model = decoder_lib.DecoderLM(decoder_config, dtype=jnp.dtype(config.dtype))

  def description(self) -> dict[str, Any]:
    """What decides the questions: the decoder's weights (its file's bytes, or a run's
    checkpoint), its tokenizer and every setting but the name."""
    settings = {field.name: getattr(self.config, field.name)
                for field in dataclasses.fields(self.config)
                if field.name not in ("expansion_name", "decoder", "decoder_workdir")}
    return dict(self.weights, tokenizer_fingerprint=self.tokenizer.fingerprint,
                settings=settings)

  def questions(self, prompts: Sequence[list[int]], rng: jax.Array) -> list[list[str]]:
    """`questions_per_block` sampled questions for each prompt (one prefill each), empty
    replies dropped."""
    config = self.config
    # Full batches of bucketed length: the last chunk is filled with copies of its first prompt.
    rows = list(prompts) + [prompts[0]] * (config.batch_blocks - len(prompts))
    length = -(-max(map(len, rows)) // PROMPT_LENGTH_BUCKET) * PROMPT_LENGTH_BUCKET
    batch = pad_left(rows, self.tokenizer.pad_id, length)
    tokens = np.asarray(generation.generate(
        self.model, self.params, batch.token_ids, batch.input_mask, rng,
        settings=config.sampling, eos_id=self.tokenizer.eos_id, pad_id=self.tokenizer.pad_id,
        samples_per_prompt=config.questions_per_block))
    replies = [clean_question(self.tokenizer.decode(row)) for row in tokens]
    per_block = config.questions_per_block
    return [[reply for reply in replies[i * per_block:(i + 1) * per_block] if reply]
            for i in range(len(prompts))]


def expand_store(store: BlockStore, config: ExpansionConfig, *,
                 show_progress: bool = False) -> expansions_lib.Expansions:
  """Generates (or finishes generating) the expansions `config.expansion_name` of `store`."""
  generator = QuestionGenerator(config)
  writer = expansions_lib.ExpansionWriter(store, config.expansion_name, generator.description(),
                                          chunk_blocks=config.batch_blocks)
  pending = writer.pending()
  if len(pending) < writer.num_chunks:
    logging.warning("%s: %d of %d chunks already written; generating the other %d",
                    writer.directory, writer.num_chunks - len(pending), writer.num_chunks,
                    len(pending))
  key = jax.random.key(config.seed)
  started = time.perf_counter()
  blocks_done = 0
  for chunk in tqdm.tqdm(pending, desc="doc2query", unit="chunk", disable=not show_progress):
    blocks = writer.chunk_blocks_of(chunk)
    prompts = [block_prompt(generator.tokenizer, store.title(block), store.text(block),
                            config.prompt, config.max_passage_tokens) for block in blocks]
    writer.write(chunk, generator.questions(prompts, jax.random.fold_in(key, chunk)))
    blocks_done += len(blocks)
  seconds = time.perf_counter() - started
  if blocks_done:
    logging.info("generated questions for %d blocks in %.1f s (%.2f blocks/s)", blocks_done,
                 seconds, blocks_done / seconds)
  return writer.finish()

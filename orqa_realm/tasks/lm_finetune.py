"""Fine-tuning the decoder to write questions about passages (what docTTTTTquery does with T5),
for doc2query expansion (`python -m orqa_realm.expand --decoder_workdir=RUN`).

    python -m orqa_realm.train --flagfile=configs/lm_finetune_squad.cfg

The (passage, question) pairs are DPR's (`--train_qa_dataset`, `--train_beir_queries`): each
training question with its positive block (SQuAD: its gold paragraph's block). A pair is the
chat prompt `expand` sends (the same `--prompt` and `--max_passage_tokens`), then the question
and the end-of-sequence token; the loss is the next-token cross-entropy on the question and
that end token only (the vocabulary's logits are formed at those positions alone: a pair is
mostly prompt). Each step takes `batch_size` pairs in seeded epochs, as DPR.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from orqa_realm.core.config import check_minimum, nested, setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import StoreSource
from orqa_realm.data.decoder_tokenization import DecoderTokenizer, pad_right
from orqa_realm.data.pretrained import resolve_decoder
from orqa_realm.data.qa import question_indices
from orqa_realm.encode import runs
from orqa_realm.encode.doc2query import DEFAULT_PROMPT, block_prompt
from orqa_realm.modeling import decoder, generation, llama_import, partitioning
from orqa_realm.tasks.base import Task, TaskContext
from orqa_realm.tasks.pairs import TrainingPairs, build_examples, mining_searcher


class LMInputs(NamedTuple):
  token_ids: np.ndarray  # [batch, length] int32: prompt, question, end; right-padded
  input_mask: np.ndarray  # [batch, length] int32
  target_start: np.ndarray  # [batch] int32: where the question starts
  target_length: np.ndarray  # [batch] int32: its tokens and the end's


@dataclasses.dataclass(frozen=True)
class LMFinetuneConfig:
  """The settings of decoder fine-tuning on (passage, question) pairs."""
  source: StoreSource = nested(StoreSource())
  pairs: TrainingPairs = nested(TrainingPairs())
  decoder: str = setting(
      "smollm2", "The decoder LM fine-tuned: a llama GGUF file, a Hugging Face llama "
      "directory, or a packaged model's name ('smollm2').")
  prompt: str = setting(DEFAULT_PROMPT, "The user turn asking for a question ({title} and "
                        "{text} the block's): expand's, so that the two agree.")
  max_passage_tokens: int = setting(
      256, "A block's text is cut to this many decoder tokens in the prompt.")
  max_length: int = setting(
      384, "Tokens of a pair (prompt, question, end) at most; a longer question is cut.",
      flag="lm_max_length")
  max_target_tokens: int = setting(
      64, "Tokens of a question and its end at most; a longer question is cut.",
      flag="lm_max_target_tokens")

  def __post_init__(self):
    check_minimum("lm_max_target_tokens", self.max_target_tokens, 2)


def pair_tokens(prompt_ids: list[int], question_ids: list[int], eos_id: int, max_length: int,
                max_target_tokens: int) -> tuple[list[int], int]:
  """A pair's tokens (prompt, then question and end cut to `max_target_tokens`, all cut to
  `max_length`) and where its targets start."""
  if len(prompt_ids) >= max_length:
    raise InputError(f"a prompt of {len(prompt_ids)} tokens leaves no room for the question in "
                     f"--lm_max_length={max_length}", field="lm_max_length")
  targets = (question_ids + [eos_id])[:max_target_tokens]
  return (prompt_ids + targets)[:max_length], len(prompt_ids)


def next_token_loss(log_probs: jax.Array, target_length: jax.Array) -> jax.Array:
  """The mean negative log-likelihood over all target tokens.

  Args:
    log_probs: [batch, max_targets], entry j the log-probability of a pair's target j.
    target_length: [batch], each pair's number of targets.
  """
  weights = generation.continuation_mask(target_length, log_probs.shape[1]).astype(jnp.float32)
  return -jnp.sum(log_probs * weights) / jnp.maximum(jnp.sum(weights), 1.0)


class LMFinetuneTask(Task):
  name = "lm_finetune"
  config_class = LMFinetuneConfig
  trains_block_tower = False
  accumulates_gradients = True  # a mean over the batch's question tokens

  def __init__(self, config: LMFinetuneConfig, context: TaskContext):
    config.pairs.check()
    self.store, bert_tokenizer = config.source.open_store()
    self.path = resolve_decoder(config.decoder)
    self.config = dataclasses.replace(
        config, source=dataclasses.replace(config.source, block_store=self.store.directory),
        decoder=self.path)
    self.context = context
    self.tokenizer = DecoderTokenizer(self.path)
    built = build_examples(config.pairs, self.store,
                           mining_searcher(config.pairs, self.store, bert_tokenizer,
                                           config.source.bert), 0, context.seed)
    self.examples = built.examples
    self.pairs = []  # (tokens, where the targets start) per example
    for example in self.examples:
      prompt_ids = block_prompt(self.tokenizer, self.store.title(example.positive),
                                self.store.text(example.positive), config.prompt,
                                config.max_passage_tokens)
      question_ids = self.tokenizer.tokenize([example.question.strip()])[0]
      self.pairs.append(pair_tokens(prompt_ids, question_ids, self.tokenizer.eos_id,
                                    config.max_length, config.max_target_tokens))
    logging.info("lm_finetune: %d (passage, question) pairs (%d questions without a positive "
                 "dropped)", len(self.pairs), built.num_dropped)
    self.model = decoder.DecoderLM(self.pretrained.config, jnp.dtype(context.dtype),
                                   context.remat)

  @functools.cached_property
  def pretrained(self) -> llama_import.PretrainedDecoder:
    return llama_import.load_decoder(self.path)

  def run_model(self) -> dict[str, Any]:
    return runs.decoder_model(self.pretrained.config, self.tokenizer.fingerprint, self.path)

  def init_params(self, rng: jax.Array) -> Any:
    boxed = decoder.init_params(self.pretrained.config, rng)
    return partitioning.with_values(boxed, jax.tree.map(jnp.asarray, self.pretrained.params))

  def train_batch(self, step: int, context) -> LMInputs:
    indices = question_indices(len(self.pairs), self.context.batch_size,
                               seed=self.context.seed, step=step)[context.rows]
    # One padded length for every step: a shape compiled once.
    batch = pad_right([self.pairs[index][0] for index in indices], self.tokenizer.pad_id,
                      self.config.max_length)
    starts = np.asarray([self.pairs[index][1] for index in indices], np.int32)
    lengths = np.asarray([len(self.pairs[index][0]) for index in indices], np.int32) - starts
    return LMInputs(batch.token_ids, batch.input_mask, starts, lengths)

  def loss_weight(self, batch: LMInputs) -> jax.Array:
    return jnp.sum(batch.target_length.astype(jnp.float32))

  def loss(self, params, batch: LMInputs, rng, deterministic: bool):
    del rng, deterministic  # the llama has no dropout
    log_probs = generation.continuation_token_log_probs(
        self.model, params, batch.token_ids, batch.input_mask, batch.target_start,
        self.config.max_target_tokens)
    loss = next_token_loss(log_probs, batch.target_length)
    return loss, {"loss": loss}

"""A frozen decoder LM as a relevance teacher: how likely a question is given a passage (ART,
Sachan et al. 2023, "Questions Are All You Need to Train a Dense Passage Retriever").

The score of (question, block) is the mean log-probability of the question's tokens after a
prompt holding the block (teacher forcing). A question's candidate blocks are scored in one
batched call; scores are kept per (question, block), since with a slowly refreshed index a
question meets mostly the same blocks epoch after epoch and the decoder is frozen (its
fingerprint is the task's, so the cache is never shared across decoders).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from orqa_realm.core.config import check_minimum, setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.decoder_tokenization import (DecoderTokenizer, check_prompt_template,
                                                   pad_right)
from orqa_realm.data.pretrained import resolve_decoder
from orqa_realm.modeling import decoder as decoder_lib
from orqa_realm.modeling import generation, llama_import

# ART's instruction (its T0 prompt), the question following it.
DEFAULT_PROMPT = "Passage: {title}. {text}\nPlease write a question based on this passage.\n" \
                 "Question:"
# Sequences are right-padded to a multiple of this, so that few shapes are compiled.
LENGTH_BUCKET = 32


@dataclasses.dataclass(frozen=True)
class QuestionLikelihoodSettings:
  """The frozen decoder that scores (question, passage) pairs, and how it reads them."""
  decoder: str = setting(
      "smollm2", "The decoder LM: a llama GGUF file, a Hugging Face llama directory, or a "
      "packaged model's name ('smollm2').")
  prompt: str = setting(DEFAULT_PROMPT, "What precedes the question; {title} and {text} are "
                        "replaced by the passage's.", flag="teacher_prompt")
  passage_tokens: int = setting(192, "A passage's text is cut to this many decoder tokens.",
                                flag="teacher_passage_tokens")
  question_tokens: int = setting(48, "A question is cut to this many decoder tokens.",
                                 flag="teacher_question_tokens")
  dtype: Literal["float32", "bfloat16"] = setting(
      "float32", "Compute dtype of the decoder's matrix products.", flag="decoder_dtype")

  def __post_init__(self):
    for name in ("passage_tokens", "question_tokens"):
      check_minimum(f"teacher_{name}", getattr(self, name), 1)
    check_prompt_template(self.prompt, "teacher_prompt")


@functools.partial(jax.jit, static_argnames=("model", "max_continuation"))
def _scores(model, params, token_ids, input_mask, starts, lengths, max_continuation):
  return generation.continuation_log_likelihood(model, params, token_ids, input_mask, starts,
                                                lengths, max_continuation)


class QuestionLikelihood:
  """Scores questions against blocks of `store` with a frozen decoder, remembering each pair."""

  def __init__(self, settings: QuestionLikelihoodSettings, store: BlockStore):
    self.settings, self.store = settings, store
    path = resolve_decoder(settings.decoder)
    pretrained = llama_import.load_decoder(path)
    self.tokenizer = DecoderTokenizer(path)
    self.model = decoder_lib.DecoderLM(pretrained.config, dtype=jnp.dtype(settings.dtype))
    self.params = jax.device_put(pretrained.params)
    self._prompts: dict[int, list[int]] = {}
    self._cache: dict[tuple[str, int], float] = {}

  def question_ids(self, question: str) -> list[int]:
    """The question as the decoder reads it after the prompt (a leading space, cut)."""
    return self.tokenizer.tokenize([" " + question.strip()])[0][:self.settings.question_tokens]

  def prompt_ids(self, block: int) -> list[int]:
    """The prompt holding block `block`, its text cut to `passage_tokens` (kept per block)."""
    if block not in self._prompts:
      text_ids = self.tokenizer.tokenize([self.store.text(block)])[0]
      text = self.tokenizer.decode(text_ids[:self.settings.passage_tokens])
      self._prompts[block] = self.tokenizer.tokenize(
          [self.settings.prompt.format(title=self.store.title(block), text=text)])[0]
    return self._prompts[block]

  def score_question(self, question: str, blocks: Sequence[int]) -> np.ndarray:
    """[len(blocks)] float32 mean log p(question | prompt(block)), the blocks not scored before
    in one decoder call."""
    missing = [int(block) for block in dict.fromkeys(int(b) for b in blocks)
               if (question, int(block)) not in self._cache]
    if missing:
      question_ids = self.question_ids(question)
      if not question_ids:
        raise InputError(f"the question {question!r} has no tokens", field="train_qa_dataset")
      # As many rows as candidates (copies of the first fill in for those scored before), so
      # that one shape serves every question.
      prompts = [self.prompt_ids(block) for block in missing]
      prompts += [prompts[0]] * (len(blocks) - len(prompts))
      length = -(-max(len(prompt) + len(question_ids) for prompt in prompts)
                 // LENGTH_BUCKET) * LENGTH_BUCKET
      batch = pad_right([prompt + question_ids for prompt in prompts], self.tokenizer.pad_id,
                        length)
      starts = np.array([len(prompt) for prompt in prompts], np.int32)
      lengths = np.full(len(prompts), len(question_ids), np.int32)
      scores = np.asarray(_scores(self.model, self.params, batch.token_ids, batch.input_mask,
                                  starts, lengths, self.settings.question_tokens))
      self._cache.update({(question, block): float(score)
                          for block, score in zip(missing, scores)})
    return np.array([self._cache[(question, int(block))] for block in blocks], np.float32)

  def __call__(self, questions: Sequence[str], blocks: np.ndarray) -> np.ndarray:
    """[questions, candidates] float32 scores of each question's row of `blocks`."""
    return np.stack([self.score_question(question, row)
                     for question, row in zip(questions, blocks)])

"""A cross-encoder teacher for the dual-encoder tasks: its scores of each training query's
candidates (cached, `encode/teacher_scores.py`), and RocketQA's denoising of mined negatives.

RocketQA (Qu et al. 2021) drops mined hard negatives that a cross-encoder judges relevant: the
unlabelled answers that would otherwise be trained as negatives. Its threshold is on a
calibrated probability; a listwise-trained cross-encoder's scores are log-odds relative to the
other candidates, so the rule here is relative to the query's own positive: a negative is
dropped when the teacher scores it above (positive's score - `--denoise_margin`). The query's
negatives are then the first n survivors of a deeper pool (`--denoise_pool` mined per query); a
query with fewer survivors keeps the pool's lowest-scored ones, counted in the log.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from absl import logging

from orqa_realm.core import parallel
from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.data.blocks import BlockStore
from orqa_realm.data.dpr import DPRExample
from orqa_realm.data.tokenization import Tokenizer
from orqa_realm.encode import runs, teacher_scores
from orqa_realm.encode.rerank import score_pairs
from orqa_realm.tasks.pairs import negatives_matrix


@dataclasses.dataclass(frozen=True)
class TeacherSettings:
  """The cross-encoder that teaches a dual encoder, and how its scores are used."""
  workdir: str = setting(
      "", "A cross-encoder run (--task=cross_encoder) whose scores of each training query's "
      "candidates are distilled (--task=distill) or denoise its mined negatives "
      "(--denoise_margin).", flag="teacher_workdir")
  checkpoint_step: int = setting(-1, "Checkpoint of --teacher_workdir; -1: the newest.",
                                 flag="teacher_checkpoint_step")
  scores: str = setting(
      "", "An .npz file caching the teacher's scores of the training candidates, refused when "
      "computed for another store, other candidates or another teacher; empty: computed at "
      "each start.", flag="teacher_scores")
  batch_size: int = setting(64, "(query, block) pairs per teacher call.",
                            flag="teacher_batch_size")
  denoise_margin: float = setting(
      math.inf, "RocketQA's denoising: drop a mined negative the teacher scores above (the "
      "query's positive - this margin); inf: keep every negative.", flag="denoise_margin")
  denoise_pool: int = setting(
      0, "Negatives mined per query before denoising, of which the first "
      "--hard_negatives_per_question survivors are kept; 0: 3 x that number.",
      flag="denoise_pool")

  @property
  def denoises(self) -> bool:
    return math.isfinite(self.denoise_margin)

  def pool_size(self, num_negatives: int) -> int:
    """Negatives mined per query: the denoising pool, or the negatives themselves."""
    if not self.denoises:
      return num_negatives
    return max(self.denoise_pool or 3 * num_negatives, num_negatives)

  def check(self) -> None:
    if self.denoises and not self.workdir:
      raise InputError("--denoise_margin needs a teacher: pass --teacher_workdir",
                       field="denoise_margin")
    if not self.workdir and (self.scores or self.checkpoint_step >= 0):
      raise InputError("--teacher_scores and --teacher_checkpoint_step name a teacher's: pass "
                       "--teacher_workdir", field="teacher_workdir")
    if self.denoise_pool and not self.denoises:
      raise InputError("--denoise_pool is read with --denoise_margin only", field="denoise_pool")


class Taught(NamedTuple):
  """Training examples with their teacher's scores."""
  examples: list[DPRExample]
  scores: np.ndarray  # [examples, 1 + negatives] float32: the positive's, then each negative's
  num_dropped: int  # negatives denoising dropped (0 without it)
  num_kept_noisy: int  # negatives kept although above the margin (too few survivors)


def denoise(examples: list[DPRExample], scores: np.ndarray, margin: float,
            num_negatives: int) -> Taught:
  """Each example's first `num_negatives` pool negatives the teacher scores below (its positive
  - `margin`), topped up with the pool's lowest-scored others when too few are.

  Args:
    scores: [examples, 1 + pool] the teacher's scores of each example's positive and pool.
  """
  kept_examples, kept_scores, dropped, noisy = [], [], 0, 0
  for example, row in zip(examples, scores):
    pool = row[1:]
    clean = [i for i in range(len(pool)) if pool[i] <= row[0] - margin]
    dropped += len(pool) - len(clean)
    chosen = clean[:num_negatives]
    if len(chosen) < num_negatives:
      others = sorted((i for i in range(len(pool)) if i not in clean), key=lambda i: pool[i])
      chosen += others[:num_negatives - len(chosen)]
      noisy += num_negatives - len(clean)
    kept_examples.append(example._replace(
        hard_negatives=tuple(example.hard_negatives[i] for i in chosen)))
    kept_scores.append(np.concatenate([row[:1], pool[chosen]]))
  return Taught(kept_examples, np.stack(kept_scores).astype(np.float32), dropped, noisy)


def restore_teacher(settings: TeacherSettings, store: BlockStore) -> runs.CrossEncoderRun:
  """The teacher cross-encoder the settings name, checked to read `store`'s wordpieces."""
  teacher = runs.restore_cross_encoder_run(settings.workdir,
                                           None if settings.checkpoint_step < 0
                                           else settings.checkpoint_step, parallel.make_mesh())
  runs.check_tokenizer(teacher, store.tokenizer_fingerprint, "the block store")
  return teacher


def teach(settings: TeacherSettings, teacher: runs.CrossEncoderRun, examples: list[DPRExample],
          store: BlockStore, tokenizer: Tokenizer, num_negatives: int) -> Taught:
  """The `teacher`'s scores of `examples` (their positive and mined pool), read from the cache
  or computed, and the examples denoised when the settings say so."""
  questions = [example.question for example in examples]
  candidates = negatives_matrix(examples, np.arange(len(examples)))  # [examples, 1 + pool]
  fingerprint = teacher_scores.cache_fingerprint(store, questions, candidates, teacher)

  def compute() -> np.ndarray:
    logging.info("scoring %d training pairs with the teacher %s", candidates.size,
                 teacher.workdir)
    return score_pairs(teacher.params, teacher.config, store, tokenizer.tokenize(questions),
                       candidates, batch_size=settings.batch_size, dtype=jnp.float32,
                       show_progress=True)

  scores = teacher_scores.load_or_compute(settings.scores, fingerprint, compute)
  if not settings.denoises:
    return Taught(examples, scores, 0, 0)
  taught = denoise(examples, scores, settings.denoise_margin, num_negatives)
  # On the console (not the quiet log): what denoising did is part of the run's result.
  print(f"denoising dropped {taught.num_dropped} of {candidates.size - len(examples)} mined "
        f"negatives ({taught.num_kept_noisy} kept above the margin: too few survivors)",
        flush=True)
  return taught

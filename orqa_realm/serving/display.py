"""An answer as a person reads it on a console: the answer and its score, then the top blocks
with their titles, the answer marked where it occurs."""

from __future__ import annotations

import re
from typing import NamedTuple

from orqa_realm.serving.system import Answer, Hit

CONTEXT_CHARACTERS = 160  # of a block's text shown on each side of the answer (or from its start)


class Marks(NamedTuple):
  """How the answer is set off in a block's text."""
  start: str
  end: str


TERMINAL_MARKS = Marks("\033[1;32m", "\033[0m")  # bold green
PLAIN_MARKS = Marks("**", "**")


def find_answer(text: str, answer: str | None, *, within_words: bool = False) -> int:
  """Where `answer` first occurs in `text` as whole words (not "15" inside "2015"), or, with
  `within_words` (the block it was read from: a span may start inside a word), anywhere; -1 if
  nowhere."""
  if not answer:
    return -1
  whole = re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", text)
  if whole:
    return whole.start()
  return text.find(answer) if within_words else -1


def excerpt(text: str, answer: str | None, marks: Marks, *, within_words: bool = False) -> str:
  """The part of `text` around the first occurrence of `answer` (`find_answer`), marked; its
  start otherwise."""
  at = find_answer(text, answer, within_words=within_words)
  if at < 0:
    cut = text[:2 * CONTEXT_CHARACTERS]
    return cut + ("..." if len(text) > len(cut) else "")
  start, end = max(0, at - CONTEXT_CHARACTERS), min(len(text), at + len(answer) + CONTEXT_CHARACTERS)
  return ("..." if start else "") + text[start:at] + marks.start + answer + marks.end + (
      text[at + len(answer):end]) + ("..." if end < len(text) else "")


def format_hit(rank: int, hit: Hit, answer: Answer, marks: Marks) -> str:
  is_source = answer.source is not None and hit.block == answer.source.block
  return (f"  {rank}. {hit.title}  (block {hit.block}, score {hit.score:.3f})\n"
          f"     {excerpt(hit.text, answer.answer, marks, within_words=is_source)}")


def format_answer(answer: Answer, marks: Marks) -> str:
  """The question, the answer with its score and source, and the top blocks."""
  lines = [f"Q: {answer.question}"]
  if answer.answer is not None:
    lines.append(f"A: {marks.start}{answer.answer}{marks.end}  (score {answer.score:.2f}, from "
                 f"block {answer.source.block}: {answer.source.title}, retrieved "
                 f"#{answer.source_rank + 1})")
  lines += [format_hit(rank, hit, answer, marks)
            for rank, hit in enumerate(answer.hits, start=1)]
  return "\n".join(lines)

"""An answer as a person reads it on a console: the answer and its score, then the top blocks
with their titles, the answer marked where it occurs."""

from __future__ import annotations

from typing import NamedTuple

from orqa_realm.serving.system import Answer, Hit

CONTEXT_CHARACTERS = 160  # of a block's text shown on each side of the answer (or from its start)


class Marks(NamedTuple):
  """How the answer is set off in a block's text."""
  start: str
  end: str


TERMINAL_MARKS = Marks("\033[1;32m", "\033[0m")  # bold green
PLAIN_MARKS = Marks("**", "**")


def excerpt(text: str, answer: str | None, marks: Marks) -> str:
  """The part of `text` around the first occurrence of `answer`, marked; its start otherwise."""
  at = text.find(answer) if answer else -1
  if at < 0:
    cut = text[:2 * CONTEXT_CHARACTERS]
    return cut + ("..." if len(text) > len(cut) else "")
  start, end = max(0, at - CONTEXT_CHARACTERS), min(len(text), at + len(answer) + CONTEXT_CHARACTERS)
  return ("..." if start else "") + text[start:at] + marks.start + answer + marks.end + (
      text[at + len(answer):end]) + ("..." if end < len(text) else "")


def format_hit(rank: int, hit: Hit, answer: str | None, marks: Marks) -> str:
  return (f"  {rank}. {hit.title}  (block {hit.block}, score {hit.score:.3f})\n"
          f"     {excerpt(hit.text, answer, marks)}")


def format_answer(answer: Answer, marks: Marks) -> str:
  """The question, the answer with its score and source, and the top blocks."""
  lines = [f"Q: {answer.question}"]
  if answer.answer is not None:
    lines.append(f"A: {marks.start}{answer.answer}{marks.end}  (score {answer.score:.2f}, from "
                 f"block {answer.source.block}: {answer.source.title}, retrieved "
                 f"#{answer.source_rank + 1})")
  lines += [format_hit(rank, hit, answer.answer, marks)
            for rank, hit in enumerate(answer.hits, start=1)]
  return "\n".join(lines)

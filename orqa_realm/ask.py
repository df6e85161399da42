"""Asks a trained system questions from the console:

    python -m orqa_realm.ask --workdir=runs/squad_pipeline "who won super bowl 50?"
    python -m orqa_realm.ask --workdir=RUN < questions.txt        # one question a line

prints each answer, its score and the top blocks with their titles, the answer marked in them.
--workdir is a pipeline's workdir, an ORQA run (answers) or a retriever run (blocks only, with
--index_dir); --index_dir and --block_store answer over another corpus's index embedded by the
same block encoder. --output_format=json prints one JSON object a line instead.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from typing import Literal

from orqa_realm import cli
from orqa_realm.core import config as settings_lib
from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.encode.rerank import RerankSettings
from orqa_realm.serving import display
from orqa_realm.serving.system import QASystem, SystemSource


@dataclasses.dataclass(frozen=True)
class AskCommand:
  """How many blocks are shown, and how."""
  top_blocks: int = setting(3, "Top retrieved blocks shown per question.")
  format: Literal["text", "json"] = setting(
      "text", "text: for reading; json: one object a line (question, answer, score, source, "
      "hits).", flag="output_format")
  batch_size: int = setting(16, "Questions answered together when they come from a file.")


SETTINGS = settings_lib.FlagBinder("ask")
SETTINGS.bind("ask", AskCommand)
SETTINGS.bind("system", SystemSource)
SETTINGS.bind("rerank", RerankSettings)


def question_batches(arguments: list[str], batch_size: int) -> Iterator[list[str]]:
  """The questions of the command line, or of stdin (one a line; typed ones one at a time)."""
  if arguments:
    yield arguments
    return
  interactive = sys.stdin.isatty()
  if interactive:
    print("Type a question and press Enter (Ctrl-D to quit).", file=sys.stderr, flush=True)
  batch = []
  for line in sys.stdin:
    if line.strip():
      batch.append(line.strip())
    if batch and (interactive or len(batch) == batch_size):
      yield batch
      batch = []
  if batch:
    yield batch


def main(arguments: list[str]) -> None:
  reranks = SETTINGS.given("rerank_workdir")
  SETTINGS.check_read(["ask", "system"] + (["rerank"] if reranks else []), "ask")
  command, source = SETTINGS.build("ask"), SETTINGS.build("system")
  for name in ("top_blocks", "batch_size"):
    if getattr(command, name) < 1:
      raise InputError("must be at least 1", field=name)
  system = QASystem.open(source, SETTINGS.build("rerank") if reranks else RerankSettings())
  if command.format == "text":
    what = "answers" if system.reader else "searches (a retriever: no reader, so blocks only)"
    print(f"{system.description['run']} {what} over {system.description['num_blocks']} blocks "
          f"of {system.description['block_store']}", file=sys.stderr, flush=True)
  marks = display.TERMINAL_MARKS if sys.stdout.isatty() else display.PLAIN_MARKS
  for questions in question_batches(arguments, command.batch_size):
    for answer in system.answer(questions, command.top_blocks):
      if command.format == "json":
        print(json.dumps(answer.to_json(), ensure_ascii=False), flush=True)
      else:
        print(display.format_answer(answer, marks) + "\n", flush=True)


if __name__ == "__main__":
  cli.run(main, SETTINGS, takes_arguments=True)

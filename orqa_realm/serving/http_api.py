"""The HTTP JSON API of a trained system (Starlette, served by uvicorn):

    POST /answer  {"question": "...", "top_blocks": 3}  -> the answer, its score, its source
                                                           block and the top blocks
    POST /search  {"question": "...", "top_blocks": 3}  -> the top blocks
    GET  /info                                          -> what the system was built from
    GET  /                                              -> a page to ask questions on

Concurrent requests are answered in batches (`batching.RequestBatcher`); a request beyond the
queue gets 503, a malformed one 400 with a message, an oversized body 413, a body that is not
`application/json` 415 (a cross-site form cannot make the server compute), a failed batch 500
with a JSON message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any

from absl import logging
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from orqa_realm.core.config import setting
from orqa_realm.serving.batching import QueueFull, RequestBatcher
from orqa_realm.serving.system import QASystem

REQUEST_FIELDS = ("question", "top_blocks")


@dataclasses.dataclass(frozen=True)
class ServeConfig:
  """How the server batches and what it accepts."""
  host: str = setting("127.0.0.1", "Address to listen on (0.0.0.0: every interface).")
  port: int = setting(8080, "Port to listen on.")
  max_batch_size: int = setting(16, "Most questions answered in one batch.")
  max_wait_ms: float = setting(
      5.0, "How long a batch waits for more requests once it has one, in milliseconds.")
  max_queue: int = setting(256, "Requests that may wait; beyond them the server answers 503.")
  max_question_chars: int = setting(1000, "Longest question accepted.")
  max_top_blocks: int = setting(20, "Most blocks a request may ask for.")
  max_body_bytes: int = setting(65536, "Largest request body accepted.")


class BadRequest(Exception):
  """A request the API refuses, with the status and the message it answers."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


async def read_body(request: Request, max_bytes: int) -> bytes:
  """The request's body, refused (413) as soon as it passes `max_bytes`, whether or not it
  declares its length (a chunked body is counted as it streams in, never held whole)."""
  too_large = BadRequest(f"the body is larger than {max_bytes} bytes", 413)
  declared = request.headers.get("content-length")
  if declared is not None and declared.isdigit() and int(declared) > max_bytes:
    raise too_large
  chunks, size = [], 0
  async for chunk in request.stream():
    size += len(chunk)
    if size > max_bytes:
      raise too_large
    chunks.append(chunk)
  return b"".join(chunks)


async def read_question(request: Request, config: ServeConfig) -> tuple[str, int]:
  """(question, top_blocks) of a request's JSON body, or BadRequest saying what is wrong."""
  # Only JSON: a cross-site form or text/plain POST (which needs no CORS preflight) is refused
  # before it costs any computation.
  media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
  if media_type != "application/json":
    raise BadRequest("the body must be JSON, sent as Content-Type: application/json", 415)
  body = await read_body(request, config.max_body_bytes)
  try:
    data = json.loads(body)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise BadRequest(f"the body is not JSON: {e}") from e
  if not isinstance(data, dict):
    raise BadRequest('the body must be a JSON object: {"question": "...", "top_blocks": 3}')
  if unknown := sorted(set(data) - set(REQUEST_FIELDS)):
    raise BadRequest(f"unknown fields {unknown}: the fields are {list(REQUEST_FIELDS)}")
  question = data.get("question")
  if not isinstance(question, str) or not question.strip():
    raise BadRequest("'question' must be a non-empty string")
  if len(question) > config.max_question_chars:
    raise BadRequest(f"'question' is longer than {config.max_question_chars} characters", 413)
  top_blocks = data.get("top_blocks", 3)
  if (isinstance(top_blocks, bool) or not isinstance(top_blocks, int)
      or not 1 <= top_blocks <= config.max_top_blocks):
    raise BadRequest(f"'top_blocks' must be an integer from 1 to {config.max_top_blocks}")
  return question.strip(), top_blocks


def make_app(system: QASystem, config: ServeConfig) -> Starlette:
  """The API over `system`. Every batch retrieves `max_top_blocks` blocks (one compiled search
  for all requests) and each response keeps the number its request asked for."""
  depth = min(config.max_top_blocks, system.searcher.num_rows)
  # One batch on the devices at a time, whichever endpoint it serves: the two batchers' worker
  # threads would otherwise compute (and hold activations) side by side.
  devices = threading.Lock()

  def answer_batch(items: Sequence[tuple[str, int]]) -> list[dict[str, Any]]:
    with devices:
      answers = system.answer([question for question, _ in items], depth)
    return [dict(answer.to_json(), hits=answer.to_json()["hits"][:top_blocks])
            for answer, (_, top_blocks) in zip(answers, items)]

  def search_batch(items: Sequence[tuple[str, int]]) -> list[dict[str, Any]]:
    with devices:
      hits = system.search([question for question, _ in items], depth)
    return [dict(question=question, hits=[dataclasses.asdict(hit) for hit in found[:top_blocks]])
            for found, (question, top_blocks) in zip(hits, items)]

  batching = dict(max_batch_size=config.max_batch_size,
                  max_wait_seconds=config.max_wait_ms / 1000, max_queue=config.max_queue)
  batchers = {"answer": RequestBatcher(answer_batch, **batching),
              "search": RequestBatcher(search_batch, **batching)}

  def endpoint(name: str):
    async def handle(request: Request) -> JSONResponse:
      try:
        item = await read_question(request, config)
        return JSONResponse(await batchers[name].submit(item))
      except BadRequest as e:
        return JSONResponse({"error": str(e)}, status_code=e.status)
      except QueueFull as e:
        return JSONResponse({"error": f"busy: {e}; retry later"}, status_code=503,
                            headers={"Retry-After": "1"})
      # The batch this request was in failed: the server itself goes on.
      except Exception as e:  # pylint: disable=broad-exception-caught
        logging.exception("a batch of %s requests failed", name)
        return JSONResponse({"error": f"internal error: {type(e).__name__}: {e}"},
                            status_code=500)
    return handle

  async def info(request: Request) -> JSONResponse:
    del request
    return JSONResponse(dict(system.description, has_reader=system.reader is not None,
                             limits=dataclasses.asdict(config)))

  page = resources.files("orqa_realm.serving").joinpath("page.html").read_text(encoding="utf-8")

  async def index(request: Request) -> HTMLResponse:
    del request
    return HTMLResponse(page)

  @contextlib.asynccontextmanager
  async def lifespan(app: Starlette):
    del app
    yield
    for batcher in batchers.values():
      await batcher.stop()

  app = Starlette(routes=[Route("/", index), Route("/info", info),
                          Route("/answer", endpoint("answer"), methods=["POST"]),
                          Route("/search", endpoint("search"), methods=["POST"])],
                  lifespan=lifespan)
  app.state.batchers = batchers
  return app


@contextlib.contextmanager
def serving_in_background(app: Starlette, *, host: str = "127.0.0.1",
                          start_timeout: float = 60.0) -> Iterator[str]:
  """Serves `app` with uvicorn on a free port of `host`, on a thread, for the block's duration
  (a browser test, a load benchmark, a notebook); yields its base URL."""
  import uvicorn  # pylint: disable=g-import-not-at-top

  with socket.socket() as probe:
    probe.bind((host, 0))
    port = probe.getsockname()[1]
  server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
  thread = threading.Thread(target=server.run, daemon=True)
  thread.start()
  deadline = time.time() + start_timeout
  while not server.started:
    if time.time() > deadline or not thread.is_alive():
      raise RuntimeError(f"the server on {host}:{port} did not start")
    time.sleep(0.05)
  try:
    yield f"http://{host}:{port}"
  finally:
    server.should_exit = True
    thread.join(timeout=start_timeout)

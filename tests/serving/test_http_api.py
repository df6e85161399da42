"""The HTTP API in-process: answers equal the system's own, concurrent requests are batched and
each gets its own answer, bad requests get 400/413 with a message, a full queue 503."""

import asyncio
import json

import httpx
import pytest
from starlette.testclient import TestClient

from orqa_realm.serving.http_api import ServeConfig, make_app
from orqa_realm.serving.system import Answer

QUESTIONS = [f"Question {i}: who won Super Bowl {40 + i}?" for i in range(12)]


@pytest.fixture(scope="module")
def client(tiny_system):
  with TestClient(make_app(tiny_system, ServeConfig(max_top_blocks=5))) as test_client:
    yield test_client


def test_answer_and_search_return_the_systems_results(client, tiny_system):
  response = client.post("/answer", json={"question": QUESTIONS[0], "top_blocks": 2})
  assert response.status_code == 200
  body = response.json()
  [expected] = tiny_system.answer([QUESTIONS[0]], 5)
  assert set(body) == {"question", "answer", "score", "source", "source_rank", "hits"}
  assert body["answer"] == expected.answer and len(body["hits"]) == 2
  assert [hit["block"] for hit in body["hits"]] == [hit.block for hit in expected.hits[:2]]
  assert body["source"]["block"] == expected.source.block
  search = client.post("/search", json={"question": QUESTIONS[0]}).json()
  assert [hit["block"] for hit in search["hits"]] == [hit.block for hit in expected.hits[:3]]
  info = client.get("/info").json()
  assert info["has_reader"] and info["num_blocks"] == len(tiny_system.store)
  page = client.get("/")
  assert page.status_code == 200 and '<form id="ask">' in page.text


@pytest.mark.parametrize("body, status, message", [
    (b"not json", 400, "the body is not JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (json.dumps({"question": ""}).encode(), 400, "'question' must be a non-empty string"),
    (json.dumps({"question": 3}).encode(), 400, "'question' must be a non-empty string"),
    (json.dumps({"question": "q", "k": 3}).encode(), 400, "unknown fields ['k']"),
    (json.dumps({"question": "q", "top_blocks": 6}).encode(), 400, "from 1 to 5"),
    (json.dumps({"question": "q", "top_blocks": True}).encode(), 400, "from 1 to 5"),
    (json.dumps({"question": "q" * 1001}).encode(), 413, "longer than 1000 characters"),
    (json.dumps({"question": "q", "pad": "x" * 70000}).encode(), 413, "larger than 65536"),
])
def test_bad_requests_are_refused_with_a_message(client, body, status, message):
  response = client.post("/answer", content=body, headers={"Content-Type": "application/json"})
  assert response.status_code == status
  assert message in response.json()["error"]


def test_a_get_of_an_endpoint_is_refused(client):
  assert client.get("/answer").status_code == 405


async def ask_concurrently(app, questions):
  transport = httpx.ASGITransport(app=app)
  async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
    return await asyncio.gather(*[http.post("/answer", json={"question": q, "top_blocks": 1})
                                  for q in questions])


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(tiny_system):
  app = make_app(tiny_system, ServeConfig(max_batch_size=8, max_wait_ms=50, max_top_blocks=5))
  responses = asyncio.run(ask_concurrently(app, QUESTIONS))
  expected = tiny_system.answer(QUESTIONS, 5)
  assert [r.status_code for r in responses] == [200] * len(QUESTIONS)
  assert [r.json()["question"] for r in responses] == QUESTIONS
  assert [r.json()["answer"] for r in responses] == [a.answer for a in expected]
  sizes = app.state.batchers["answer"].batch_sizes
  assert sum(sizes) == len(QUESTIONS) and max(sizes) == 8 and len(sizes) < len(QUESTIONS)


def test_requests_beyond_the_queue_get_503(tiny_system):
  app = make_app(tiny_system, ServeConfig(max_batch_size=1, max_queue=2, max_wait_ms=0,
                                     max_top_blocks=5))
  responses = asyncio.run(ask_concurrently(app, QUESTIONS[:8]))
  statuses = [r.status_code for r in responses]
  assert statuses.count(503) >= 1 and statuses.count(200) >= 2
  refused = next(r for r in responses if r.status_code == 503)
  assert "busy" in refused.json()["error"] and refused.headers["retry-after"] == "1"


def test_only_json_is_read_and_a_streamed_body_is_cut_off_at_the_limit(client):
  as_text = client.post("/answer", content=json.dumps({"question": "q"}),
                        headers={"Content-Type": "text/plain"})
  assert as_text.status_code == 415 and "application/json" in as_text.json()["error"]
  chunks = iter([b'{"question": "', b"q" * 70000, b'"}'])  # no Content-Length: chunked
  streamed = client.post("/answer", content=chunks, headers={"Content-Type": "application/json"})
  assert streamed.status_code == 413 and "larger than 65536" in streamed.json()["error"]


class FailingSystem:
  """Answers like a system, except that a batch holding "fail" raises, and one holding "short"
  returns too few answers."""
  description = {}
  reader = None

  class searcher:  # pylint: disable=invalid-name
    num_rows = 10

  def answer(self, questions, k):
    if "fail" in questions:
      raise RuntimeError("the device fell over")
    found = [Answer(question, None, None, None, None, []) for question in questions]
    return found[:-1] if "short" in questions else found


def test_a_failed_batch_answers_500_and_the_server_goes_on():
  app = make_app(FailingSystem(), ServeConfig(max_batch_size=1, max_wait_ms=0))
  responses = asyncio.run(ask_concurrently(app, ["fail", "short", "fine"]))
  assert [r.status_code for r in responses] == [500, 500, 200]
  assert "RuntimeError: the device fell over" in responses[0].json()["error"]
  assert "0 results for a batch of 1" in responses[1].json()["error"]
  assert responses[2].json()["question"] == "fine"

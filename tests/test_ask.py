"""`python -m orqa_realm.ask`: questions from stdin, one a line, answered as JSON lines."""

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT, subprocess_env


def test_questions_on_stdin_are_answered_one_a_line(tiny_pipeline):
  workdir, _ = tiny_pipeline
  result = subprocess.run(
      [sys.executable, "-m", "orqa_realm.ask", f"--workdir={workdir}", "--output_format=json",
       "--top_blocks=2"],
      input="Who won Super Bowl 50?\n\nWhere is Normandy?\n", cwd=REPO_ROOT,
      env=subprocess_env(), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  answers = [json.loads(line) for line in result.stdout.splitlines()]
  assert [a["question"] for a in answers] == ["Who won Super Bowl 50?", "Where is Normandy?"]
  for answer in answers:
    assert len(answer["hits"]) == 2 and answer["answer"] in answer["source"]["text"]
    assert set(answer["hits"][0]) == {"block", "document_id", "title", "text", "score"}


def test_rerank_settings_without_a_cross_encoder_are_refused(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "orqa_realm.ask", f"--workdir={tmp_path}", "--rerank_depth=5",
       "a question"], cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 1
  assert "--rerank_depth is not read by `ask`" in result.stderr

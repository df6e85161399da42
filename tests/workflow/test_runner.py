"""The runner's decisions, with stages that write files instead of running commands: complete
stages are skipped, changed settings or inputs rerun a stage (and what reads it) with the old
output moved aside, and a killed stage resumes over its own partial output."""

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from orqa_realm.core.errors import InputError
from orqa_realm.workflow import flagfiles, records, runner
from orqa_realm.workflow.stages import Stage, files_output, stage_fingerprint


class FakeCommands:
  """Runs a stage by writing `OUTPUT/result.txt` (its flags and what it read); `fail_once`
  names a stage whose first run is killed after writing a partial file."""

  def __init__(self, fail_once: str = ""):
    self.ran: list[str] = []
    self.fail_once = fail_once

  def __call__(self, argv: list[str]) -> int:
    flags = dict(arg[2:].split("=", 1) for arg in argv[3:])
    name = flags["name"]
    self.ran.append(name)
    os.makedirs(flags["output"], exist_ok=True)
    if name == self.fail_once:
      self.fail_once = ""
      with open(os.path.join(flags["output"], "partial.txt"), "w") as f:
        f.write("half")
      raise SystemExit(128 + signal.SIGTERM)
    read = open(flags["input"]).read() if "input" in flags else ""
    with open(os.path.join(flags["output"], "result.txt"), "w") as f:
      f.write(f"{flags.get('setting')} after [{read}]")
    return 0


def make_stages(workdir, setting_a="1", setting_b="1"):
  out = lambda name: str(workdir / name)
  check = files_output("result.txt")
  return [
      Stage("a", "first", "fake", ("--name=a", f"--setting={setting_a}", f"--output={out('a')}"),
            out("a"), check),
      Stage("b", "second", "fake", ("--name=b", f"--setting={setting_b}", f"--output={out('b')}",
                                    f"--input={out('a')}/result.txt"), out("b"), check,
            after=("a",)),
  ]


def statuses(results):
  return {result.stage.name: result.status for result in results}


def test_complete_stages_are_skipped_and_changes_rerun_what_they_reach(tmp_path):
  commands = FakeCommands()
  assert statuses(runner.run_pipeline(str(tmp_path), make_stages(tmp_path), commands)) == {
      "a": "ran", "b": "ran"}
  assert statuses(runner.run_pipeline(str(tmp_path), make_stages(tmp_path), commands)) == {
      "a": "skipped", "b": "skipped"}
  # A setting of b reruns b alone; one of a reruns a, and b because its input changed.
  assert statuses(runner.run_pipeline(str(tmp_path), make_stages(tmp_path, setting_b="2"),
                                      commands)) == {"a": "skipped", "b": "ran"}
  assert statuses(runner.run_pipeline(str(tmp_path), make_stages(tmp_path, "2", "2"),
                                      commands)) == {"a": "ran", "b": "ran"}
  assert commands.ran == ["a", "b", "b", "a", "b"]
  assert (tmp_path / "b" / "result.txt").read_text() == "2 after [2 after []]"
  superseded = sorted(os.listdir(tmp_path / runner.SUPERSEDED))
  assert [name.split("-")[0] for name in superseded] == ["a", "b", "b"]


def test_an_output_changed_after_completion_is_rebuilt(tmp_path):
  commands = FakeCommands()
  runner.run_pipeline(str(tmp_path), make_stages(tmp_path), commands)
  (tmp_path / "a" / "result.txt").write_text("edited by hand")
  # Rebuilt as it was, a's output has its recorded identity again: b need not run.
  assert statuses(runner.run_pipeline(str(tmp_path), make_stages(tmp_path), commands)) == {
      "a": "ran", "b": "skipped"}
  assert (tmp_path / "a" / "result.txt").read_text() == "1 after []"


def test_a_killed_stage_resumes_over_its_partial_output_and_keeps_its_time(tmp_path):
  commands = FakeCommands(fail_once="b")
  with pytest.raises(SystemExit):
    runner.run_pipeline(str(tmp_path), make_stages(tmp_path), commands)
  killed = records.read_record(str(tmp_path), "b")
  assert not killed.complete and killed.attempts == 1
  results = runner.run_pipeline(str(tmp_path), make_stages(tmp_path), commands)
  assert statuses(results) == {"a": "skipped", "b": "ran"}
  assert (tmp_path / "b" / "partial.txt").exists()  # resumed over, not moved aside
  resumed = records.read_record(str(tmp_path), "b")
  assert resumed.complete and resumed.attempts == 2 and resumed.seconds >= killed.seconds
  assert not (tmp_path / runner.SUPERSEDED).exists()


def test_an_output_the_pipeline_did_not_write_is_moved_aside(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "result.txt").write_text("someone else's")
  runner.run_pipeline(str(tmp_path), make_stages(tmp_path), FakeCommands())
  [moved] = os.listdir(tmp_path / runner.SUPERSEDED)
  assert (tmp_path / runner.SUPERSEDED / moved / "result.txt").read_text() == "someone else's"


def pipeline_running(stage: str) -> subprocess.Popen:
  """A pipeline process running the Python code `stage` as its stage, once the stage printed
  "ready" (its signal handlers are in place)."""
  pipeline = textwrap.dedent(f"""
      import sys
      from orqa_realm.workflow import runner
      runner.run_command([sys.executable, "-c", {stage!r}])""")
  process = subprocess.Popen([sys.executable, "-c", pipeline], stdout=subprocess.PIPE, text=True)
  assert process.stdout.readline().strip() == "ready"
  return process


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_reaches_the_running_stage_as_sigterm_and_stops_the_pipeline(tmp_path, signum):
  """The pipeline turns SIGTERM or SIGINT into one SIGTERM of its stage (on which training
  saves a checkpoint), waits for it, and exits with 128 + the signal."""
  marker = tmp_path / "stage_got_sigterm"
  stage = textwrap.dedent(f"""
      import signal, sys, time
      def stop(*_):
        open({str(marker)!r}, "a").write("sigterm ")
        sys.exit(3)
      signal.signal(signal.SIGTERM, stop)
      signal.signal(signal.SIGINT, lambda *_: open({str(marker)!r}, "a").write("sigint "))
      print("ready", flush=True)
      time.sleep(60)""")
  process = pipeline_running(stage)
  process.send_signal(signum)
  assert process.wait(timeout=30) == 128 + signum
  assert marker.read_text() == "sigterm "


def test_a_stage_whose_pipeline_is_killed_gets_sigterm(tmp_path):
  marker = tmp_path / "stage_got_sigterm"
  stage = textwrap.dedent(f"""
      import signal, sys, time
      signal.signal(signal.SIGTERM, lambda *_: (open({str(marker)!r}, "w").close(), sys.exit(3)))
      print("ready", flush=True)
      time.sleep(60)""")
  process = pipeline_running(stage)
  process.kill()
  process.wait(timeout=30)
  deadline = time.time() + 30
  while not marker.exists():
    assert time.time() < deadline, "the stage outlived its killed pipeline"
    time.sleep(0.05)


def test_a_damaged_output_is_rebuilt(tmp_path):
  commands = FakeCommands()
  stages = make_stages(tmp_path)
  damaged = dataclasses.replace(stages[0], check_output=raising_check)
  runner.run_pipeline(str(tmp_path), stages, commands)
  with pytest.raises(InputError, match="ended without completing its output"):
    runner.run_pipeline(str(tmp_path), [damaged, stages[1]], commands)
  assert commands.ran == ["a", "b", "a"]


def raising_check(directory, upstream):
  raise InputError("column file is missing", path=directory)


def test_stage_fingerprints_read_the_flagfiles(tmp_path):
  config = tmp_path / "stage.cfg"
  config.write_text("# a comment\n--setting=1\n")
  stage = Stage("a", "first", "fake", (f"--flagfile={config}",), str(tmp_path / "a"),
                files_output("result.txt"))
  before = stage_fingerprint(stage, {}, flagfiles.expand)
  config.write_text("# another comment\n\n--setting=1\n")
  assert stage_fingerprint(stage, {}, flagfiles.expand) == before
  config.write_text("--setting=2\n")
  assert stage_fingerprint(stage, {}, flagfiles.expand) != before
  assert records.fingerprint({"a": 1, "b": 2}) == records.fingerprint({"b": 2, "a": 1})

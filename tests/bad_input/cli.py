"""Running a command as a user does, and checking that it refused cleanly."""

import subprocess
import sys

from tests.conftest import REPO_ROOT, subprocess_env


def run_command(command: str, *args, timeout: float = 600) -> subprocess.CompletedProcess:
  """`python -m orqa_realm.COMMAND ARGS...`, its output captured."""
  return subprocess.run([sys.executable, "-m", f"orqa_realm.{command}", *map(str, args)],
                        cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True,
                        timeout=timeout)


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
  """The command exited with an error message (no traceback) holding every fragment."""
  assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  message = result.stderr.strip().splitlines()[-1]
  assert message.startswith("error: "), message
  for fragment in fragments:
    assert fragment in message, (fragment, message)

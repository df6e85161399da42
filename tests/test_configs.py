"""Every flagfile in configs/ starts with a comment header naming the command that runs it, and
parses with that command: every flag it names is one the command defines (with help text), of
the flag's type, and read by the run it describes (`check_flags` of train and evaluate refuse a
flag the chosen task or retrieval does not read); each command's --helpfull documents every
flag its configs use."""

import collections
import json
import re
import subprocess
import sys

from tests.conftest import REPO_ROOT, subprocess_env

CONFIGS = sorted((REPO_ROOT / "configs").glob("*.cfg"))

# Run in a subprocess per command: each parses its configs as `python -m` would (the files they
# name need not exist: only the flags are checked).
CHECK = """
import importlib, json, sys
from absl import flags
command = importlib.import_module(sys.argv[1])
command.SETTINGS.define()
problems = []
for path in sys.argv[2:]:
  flags.FLAGS.unparse_flags()
  try:
    flags.FLAGS([sys.argv[1], f"--flagfile={path}"])
    for line in open(path, encoding="utf-8"):
      name = line.strip().removeprefix("--").partition("=")[0]
      if line.strip().startswith("--") and name in flags.FLAGS and not flags.FLAGS[name].help.strip():
        problems.append(f"{path}: --{name} has no help text")
    if hasattr(command, "check_flags"):
      command.check_flags()
  except Exception as e:  # Any refusal is the finding, reported with its file.
    problems.append(f"{path}: {type(e).__name__}: {e}")
print(json.dumps(problems))
"""


def command_of(config) -> str:
  """The module of the `python -m orqa_realm.X --flagfile=configs/NAME.cfg` line of the header."""
  header = "\n".join(line for line in config.read_text().splitlines() if line.startswith("#"))
  found = re.search(rf"python -m (orqa_realm\.\w+) --flagfile=configs/{re.escape(config.name)}",
                    header)
  assert found, f"{config.name}: the header names no `python -m ... --flagfile={config.name}`"
  return found.group(1)


def test_every_config_names_only_flags_of_its_command():
  assert {"ict_demo.cfg", "orqa_squad_demo.cfg", "orqa_nq.cfg"} <= {c.name for c in CONFIGS}
  by_command = collections.defaultdict(list)
  for config in CONFIGS:
    assert config.read_text().startswith("# "), f"{config.name}: no comment header"
    by_command[command_of(config)].append(str(config))
  for command, configs in by_command.items():
    result = subprocess.run([sys.executable, "-c", CHECK, command, *configs], cwd=REPO_ROOT,
                            env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [], command


def config_flag_names(config) -> set[str]:
  """The flag names a flagfile writes (`--noX` as written)."""
  return {line.strip().removeprefix("--").partition("=")[0]
          for line in config.read_text().splitlines()
          if line.strip() and not line.strip().startswith("#")}


def test_helpfull_documents_every_config_flag():
  by_command = collections.defaultdict(set)
  for config in CONFIGS:
    by_command[command_of(config)] |= config_flag_names(config)
  for command, names in by_command.items():
    # absl prints the help and exits with status 1.
    result = subprocess.run([sys.executable, "-m", command, "--helpfull"], cwd=REPO_ROOT,
                            env=subprocess_env(), capture_output=True, text=True, timeout=300)
    documented = set(re.findall(r"^\s+--(?:\[no\])?(\w+):", result.stdout, re.MULTILINE))
    undocumented = {name for name in names if name not in documented
                    and not (name.startswith("no") and name[2:] in documented)}
    assert not undocumented, (command, sorted(undocumented))

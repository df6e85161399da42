"""The package's one-way layering: each module imports only from its own layer and those below
it, no library module imports a command, and importing any module defines no flag."""

import ast
import json
import pathlib
import subprocess
import sys

from tests.conftest import REPO_ROOT, subprocess_env

PACKAGE = REPO_ROOT / "orqa_realm"
# Lowest first; a module may import from its own layer and the ones before it.
LAYERS = ("core", "data", "modeling", "index", "encode", "tasks", "training", "serving",
          "workflow", "commands")
COMMAND_HELPER = "orqa_realm.cli"


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(REPO_ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
  """The layer of `orqa_realm.X...`: its subpackage, or `commands` for a top-level module."""
  parts = module.split(".")
  if len(parts) > 1 and parts[1] in LAYERS:
    return parts[1]
  return "commands" if len(parts) > 1 else "core"


def imported_modules(path: pathlib.Path) -> list[tuple[int, str]]:
  """(line, module) of every orqa_realm module `path` imports (`from orqa_realm.data import
  blocks` names orqa_realm.data.blocks)."""
  found = []
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
    if isinstance(node, ast.Import):
      found += [(node.lineno, alias.name) for alias in node.names
                if alias.name.startswith("orqa_realm")]
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("orqa_realm"):
      for alias in node.names:
        candidate = f"{node.module}.{alias.name}"
        is_module = (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists() or (
            PACKAGE.parent / candidate.replace(".", "/")).is_dir()
        found.append((node.lineno, candidate if is_module else node.module))
  return found


def modules() -> list[pathlib.Path]:
  return sorted(PACKAGE.rglob("*.py"))


def test_every_subpackage_is_a_known_layer():
  subpackages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
  assert subpackages == set(LAYERS) - {"commands"}


def test_imports_only_go_down_the_layers():
  problems = []
  for path in modules():
    importer = module_name(path)
    importer_layer = LAYERS.index(layer_of(importer))
    for line, imported in imported_modules(path):
      imported_layer = LAYERS.index(layer_of(imported))
      where = f"{path.relative_to(REPO_ROOT)}:{line}"
      if imported_layer > importer_layer:
        problems.append(f"{where}: {layer_of(importer)} module imports {imported} "
                        f"({layer_of(imported)})")
      elif (importer_layer == imported_layer == LAYERS.index("commands")
            and imported not in (COMMAND_HELPER, "orqa_realm")):
        problems.append(f"{where}: command {importer} imports command {imported}")
  assert not problems, "\n".join(problems)


def test_the_layering_test_sees_a_backward_import(tmp_path):
  """The check above catches what it is meant to: a data module importing from tasks."""
  bad = tmp_path / "bad.py"
  bad.write_text("from orqa_realm.tasks.base import Task\nfrom orqa_realm.core import errors\n")
  layers = [layer_of(module) for _, module in imported_modules(bad)]
  assert layers == ["tasks", "core"]
  assert LAYERS.index("tasks") > LAYERS.index("data")


# Imports every module of the package and prints the flags that appeared (orbax defines two of
# its own on import: they are counted before).
IMPORT_ALL = """
import importlib, json, sys
from absl import app, flags, logging
import orbax.checkpoint
before = set(flags.FLAGS)
for name in sys.argv[1:]:
  importlib.import_module(name)
print(json.dumps(sorted(set(flags.FLAGS) - before)))
"""


def test_importing_any_module_defines_no_flag():
  """Commands define their flags when they run, libraries never: so modules import together
  (a test, a notebook) without clashes."""
  names = [module_name(path) for path in modules()]
  result = subprocess.run([sys.executable, "-c", IMPORT_ALL, *names], cwd=REPO_ROOT,
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout.strip().splitlines()[-1]) == []

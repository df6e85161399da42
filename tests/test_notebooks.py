"""The Colab notebooks run top to bottom on CPU at their "ci" size (a few articles and steps):
every cell must succeed, and each stage must leave its outputs behind."""

import json
import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO_ROOT, subprocess_env


def execute(name: str, workdir, monkeypatch) -> nbformat.NotebookNode:
  """Executes colab/NAME.ipynb in a fresh kernel from the repository root; a failing cell
  raises nbclient's CellExecutionError."""
  for variable, value in subprocess_env(ORQA_REALM_NOTEBOOK_SCALE="ci",
                                        ORQA_REALM_NOTEBOOK_WORKDIR=str(workdir)).items():
    monkeypatch.setenv(variable, value)
  notebook = nbformat.read(os.path.join(REPO_ROOT, "colab", f"{name}.ipynb"), as_version=4)
  NotebookClient(notebook, timeout=1200, kernel_name="python3",
                 resources={"metadata": {"path": str(REPO_ROOT)}}).execute()
  return notebook


def read_jsonl(path) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def cell_text(notebook: nbformat.NotebookNode) -> str:
  """Everything the cells printed."""
  return "".join(output.get("text", "") for cell in notebook.cells
                 for output in cell.get("outputs", []))


def displayed_png(notebook: nbformat.NotebookNode) -> bool:
  """Whether a cell displayed a PNG image."""
  return any("image/png" in output.get("data", {}) for cell in notebook.cells
             for output in cell.get("outputs", []))


@pytest.mark.slow
def test_quickstart_runs_top_to_bottom(tmp_path, monkeypatch):
  notebook = execute("quickstart", tmp_path, monkeypatch)
  assert "CpuDevice" in cell_text(notebook)  # the devices cell printed jax.devices()
  assert (tmp_path / "index" / "LATEST").exists()
  metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  recall = metrics["answer_recall"]
  assert 0.0 <= recall["@1"] <= recall["@5"] <= recall["@20"] <= 1.0
  assert metrics["num_queries"] == 16 and metrics["reader_step"] == 2  # the "ci" size
  predictions = read_jsonl(tmp_path / "eval" / "predictions.jsonl")
  assert len(predictions) == 16
  assert sum(p["correct"] for p in predictions) == round(16 * metrics["exact_match"])
  assert (tmp_path / "eval" / "recall_at_k.png").stat().st_size > 0
  assert displayed_png(notebook)  # the plot cell displayed it


@pytest.mark.slow
def test_realm_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
  notebook = execute("realm_pretraining", tmp_path, monkeypatch)
  assert (tmp_path / "blocks" / "salient_spans" / "manifest.json").exists()
  records = [r for r in read_jsonl(tmp_path / "realm" / "metrics.jsonl") if "loss" in r]
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  assert all(r["index_version"] >= 1 for r in records)
  assert "retrieval utility" in cell_text(notebook)
  assert displayed_png(notebook)

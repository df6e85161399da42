"""Exports a trained run's encoders for PyTorch users:

    python -m orqa_realm.export --workdir=runs/ict_squad_minilm --output_dir=exports/ict

writes each tower of the retriever (one `encoder/` when the towers are shared; an ORQA run's
question encoder and its reader's BERT) as a Hugging Face BERT directory with the run's
tokenizer, plus sentence-transformers modules where the pooling allows, and `export.json`
saying what each holds (`orqa_realm/encode/export.py`). A directory it wrote before is replaced;
any other is refused.
"""

from __future__ import annotations

import dataclasses
import json
import os

from orqa_realm import cli
from orqa_realm.core import checkpoints, parallel, run_directory
from orqa_realm.core import config as settings_lib
from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.data import blocks as block_store_lib
from orqa_realm.data import files
from orqa_realm.encode import export, runs
from orqa_realm.modeling import retriever


@dataclasses.dataclass(frozen=True)
class ExportCommand:
  """Where the export goes."""
  output_dir: str = setting("", "Where the export is written (replaced if an earlier export).")


SETTINGS = settings_lib.FlagBinder("export")
SETTINGS.bind("export", ExportCommand)
SETTINGS.bind("run", runs.RunCheckpoint)

OWNER = files.Owner(export.EXPORT_FILE, export.EXPORT_FORMAT)


def main() -> None:
  command, checkpoint = SETTINGS.build("export"), SETTINGS.build("run")
  if not checkpoint.workdir:
    raise InputError("--workdir is required", field="workdir")
  if not command.output_dir:
    raise InputError("--output_dir is required", field="output_dir")
  description = run_directory.read_run(checkpoint.workdir)
  bert_dir = runs.trained_bert(description)  # whose tokenizer files the export carries
  workdir, step = checkpoint.workdir, checkpoint.step
  mesh = parallel.make_mesh()
  record = dict(format=export.EXPORT_FORMAT, run=description.workdir, run_id=description.run_id,
                task=description.task)
  with files.atomic_directory(command.output_dir, OWNER) as output:
    if description.task == runs.ORQA_TASK:
      run = runs.restore_orqa_run(workdir, step, mesh)
      config, record["checkpoint_step"] = run.retriever_config, run.step
      tower = run.params["retriever"][retriever.tower_names(config)[0]]
      towers = {"query_encoder": export.export_tower(
          os.path.join(output, "query_encoder"), tower, config, bert_dir, config.query_length)}
      record["reader"] = export.export_bert(os.path.join(output, "reader"),
                                            run.params["reader"]["bert"], run.reader_config.bert,
                                            bert_dir)
    elif description.task == runs.ADORE_TASK:
      run = runs.restore_query_tower_run(workdir, step, mesh)
      config, record["checkpoint_step"] = run.retriever_config, run.step
      towers = {"query_encoder": export.export_tower(
          os.path.join(output, "query_encoder"), run.params[retriever.tower_names(config)[0]],
          config, bert_dir, config.query_length)}
    else:
      saved = runs.open_retriever_run(workdir)
      config = saved.retriever
      with checkpoints.CheckpointReader(run_directory.checkpoint_dir(workdir)) as reader:
        record["checkpoint_step"] = runs.checkpoint_step(reader, step)
        params = runs.restore_retriever(reader, record["checkpoint_step"], config, mesh)
      lengths = ({"encoder": config.block_length} if config.share_encoders else
                 {"query_encoder": config.query_length, "block_encoder": config.block_length})
      towers = {name: export.export_tower(os.path.join(output, name), params[name], config,
                                          bert_dir, length) for name, length in lengths.items()}
    # What the towers read: block_format says how a block's title and text make its input.
    record.update(towers=towers, retriever=config.to_dict(),
                  block_input=block_store_lib.BLOCK_FORMATS[config.block_format])
    with open(os.path.join(output, export.EXPORT_FILE), "w", encoding="utf-8") as f:
      json.dump(record, f, indent=2)
  print(f"exported checkpoint {record['checkpoint_step']} of {description.workdir} to "
        f"{command.output_dir}: {', '.join([*towers, *(['reader'] if 'reader' in record else [])])}")


if __name__ == "__main__":
  cli.run(main, SETTINGS)

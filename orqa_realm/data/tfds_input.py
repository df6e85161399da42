"""Records of a tensorflow-datasets split prepared in a local directory (no download at run time).

A split is named `DATASET[/CONFIG][:VERSION]@SPLIT`, e.g. `natural_questions_open@validation`,
`trivia_qa/unfiltered.nocontext@train[:1000]` or `wikipedia/20230601.en@train`, and read from
`--tfds_data_dir` (else the `TFDS_DATA_DIR` environment variable, else TFDS's default directory).
Prepare it once where there is network: `tfds build DATASET --data_dir=DIR`.

Splits stored as ArrayRecord are read without TensorFlow (TFDS's random-access data source); the
TFRecord files that `tfds build` writes by default are read through `tf.data`, so they need
TensorFlow, or a conversion: `tfds convert_format --root_data_dir=DIR --out_file_format=array_record`.
TFDS is an optional dependency (`pip install -e ".[tfds]"`), imported only when a split is read.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError



@dataclasses.dataclass(frozen=True)
class TFDSSettings:
  """Where prepared tensorflow-datasets are read from."""
  tfds_data_dir: str = setting(
      "", "Directory of prepared tensorflow-datasets, for the tfds:NAME@SPLIT specs of --corpus "
      "and the QA dataset flags (empty: $TFDS_DATA_DIR, else TFDS's own default).")


# The directory a command chose (`use_settings`), for every tfds: spec it reads.
_data_dir: str | None = None


def use_settings(settings: TFDSSettings) -> None:
  """Reads every tfds: spec of this process from `settings.tfds_data_dir` (when set)."""
  global _data_dir
  _data_dir = settings.tfds_data_dir or None


# TFDS file formats read by index, without TensorFlow.
_RANDOM_ACCESS_FORMATS = ("array_record",)


def parse_split_spec(spec: str) -> tuple[str, str]:
  """(`DATASET[/CONFIG][:VERSION]`, `SPLIT`) of `spec`, or an error saying the expected form."""
  name, at, split = spec.rpartition("@")
  if not at or not name or not split:
    raise InputError(f"expected tfds:DATASET[/CONFIG][:VERSION]@SPLIT, got 'tfds:{spec}'")
  return name, split


def data_dir() -> str | None:
  """The command's --tfds_data_dir when set, else $TFDS_DATA_DIR (or None: TFDS's default)."""
  return _data_dir or os.environ.get("TFDS_DATA_DIR")


def read_records(spec: str, *, directory: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
  """(index, record) of each example of the split `spec`, in the split's order; byte strings
  are decoded to `str` and arrays to lists, so records read like parsed JSON.

  `directory` overrides `data_dir()`. A split that is not prepared there is an error naming the
  directory and the command that prepares it; nothing is downloaded.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise InputError("tfds: specs need tensorflow-datasets: pip install -e '.[tfds]'",
                     path=f"tfds:{spec}") from e
  name, split = parse_split_spec(spec)
  directory = directory if directory is not None else data_dir()
  where = f"tfds:{spec}"
  try:
    builder = tfds.builder(name, data_dir=directory, try_gcs=False)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise InputError(f"no TFDS dataset {name!r} in {directory or 'the default data dir'}: "
                     f"prepare it with `tfds build {name} --data_dir=DIR`", path=where) from e
  if not builder.is_prepared():
    raise InputError(f"TFDS dataset {name!r} is not prepared in {builder.data_dir}: prepare it "
                     f"with `tfds build {name} --data_dir=DIR` (nothing is downloaded at run "
                     "time)", path=where)
  if builder.info.file_format.value in _RANDOM_ACCESS_FORMATS:
    examples = iter(builder.as_data_source(split=split))
  else:
    examples = _tf_data_examples(builder, split, where)
  for index, example in enumerate(examples):
    yield index, _to_python(example)


def _tf_data_examples(builder, split: str, where: str) -> Iterator[dict[str, Any]]:
  """The examples of a TFRecord split, through tf.data (TensorFlow needed)."""
  if importlib.util.find_spec("tensorflow") is None:
    raise InputError(
        f"the split is stored as {builder.info.file_format.value}, which TFDS reads with "
        "TensorFlow: install tensorflow, or convert it once with `tfds convert_format "
        "--root_data_dir=DIR --out_file_format=array_record`", path=where)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return iter(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


def _to_python(value: Any) -> Any:
  """`value` with bytes decoded as UTF-8, numpy arrays as lists and scalars as Python numbers."""
  if isinstance(value, dict):
    return {key: _to_python(item) for key, item in value.items()}
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, (list, tuple, np.ndarray)):
    return [_to_python(item) for item in value]
  if isinstance(value, np.generic):
    return value.item()
  return value

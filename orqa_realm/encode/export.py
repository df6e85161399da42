"""Exporting a trained run's encoders as Hugging Face BERT directories that PyTorch users load:

    OUTPUT_DIR/
      export.json              what was exported: the run, its checkpoint, each tower's inputs
      query_encoder/           (encoder/ when the towers are shared)
        config.json, model.safetensors, vocab.txt, tokenizer.json, ...   BertModel + tokenizer
        modules.json, sentence_bert_config.json, 1_Pooling/, [2_Dense/, 3_LayerNorm/,]
        [N_Normalize/]         sentence-transformers: the same embeddings from one call
      block_encoder/
      reader/                  an ORQA run's reader BERT (its span head is ours alone)

`transformers.BertModel.from_pretrained(DIR/query_encoder)` gives the BERT; with
sentence-transformers, `SentenceTransformer(DIR/query_encoder).encode(texts)` gives our
embeddings. sentence-transformers cannot express the BERT pooler's output (`--pooling=pooled`):
such towers are exported as BertModel directories only.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import numpy as np

from orqa_realm.data.pretrained import resolve_model_dir
from orqa_realm.modeling import retriever
from orqa_realm.modeling.bert import BertConfig
from orqa_realm.modeling.hf_export import save_hf_bert

EXPORT_FILE = "export.json"
EXPORT_FORMAT = "orqa_realm.export"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json")
_POOLING_MODES = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens"}
# sentence-transformers' LayerNorm module is torch's default, eps fixed at 1e-5.
SENTENCE_TRANSFORMERS_LAYER_NORM_EPS = 1e-5


def copy_tokenizer(model_dir: str, directory: str) -> None:
  """The tokenizer files of the BERT the run started from (the run's tokenizer)."""
  source = resolve_model_dir(model_dir)
  for name in TOKENIZER_FILES:
    if os.path.isfile(os.path.join(source, name)):
      shutil.copy(os.path.join(source, name), os.path.join(directory, name))


def _write_json(path: str, value: Any) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2)


def _save_module_tensors(directory: str, tensors: dict[str, np.ndarray]) -> None:
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top

  save_file({name: np.ascontiguousarray(value, np.float32) for name, value in tensors.items()},
            os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})


def sentence_transformers_modules(directory: str, tower: dict[str, Any],
                                  config: retriever.RetrieverConfig, max_length: int) -> bool:
  """Writes the sentence-transformers description of a tower (Transformer, Pooling, and the
  projection as Dense + LayerNorm, then Normalize); False, writing nothing, when its pooling has
  no sentence-transformers module."""
  if config.pooling not in _POOLING_MODES:
    return False
  hidden = config.bert.hidden_size
  modules = [("", "sentence_transformers.models.Transformer")]
  _write_json(os.path.join(directory, "sentence_bert_config.json"),
              dict(max_seq_length=max_length, do_lower_case=False))
  pooling = {mode: False for mode in ("pooling_mode_cls_token", "pooling_mode_mean_tokens",
                                      "pooling_mode_max_tokens",
                                      "pooling_mode_mean_sqrt_len_tokens")}
  pooling[_POOLING_MODES[config.pooling]] = True
  modules.append(("1_Pooling", "sentence_transformers.models.Pooling"))
  _write_json(os.path.join(directory, "1_Pooling", "config.json"),
              dict(pooling, word_embedding_dimension=hidden))
  if config.projection_size:
    dense_dir = os.path.join(directory, f"{len(modules)}_Dense")
    _write_json(os.path.join(dense_dir, "config.json"), dict(
        in_features=hidden, out_features=config.projection_size, bias=True,
        activation_function="torch.nn.modules.linear.Identity"))
    # LayerNorm(c x; eps) = LayerNorm(x; eps / c^2): the Dense layer's output scaled by c makes
    # the fixed eps of the next module act as ours, exactly.
    scale = np.sqrt(SENTENCE_TRANSFORMERS_LAYER_NORM_EPS / config.bert.layer_norm_eps)
    _save_module_tensors(dense_dir, {
        "linear.weight": scale * np.asarray(tower["projection"]["kernel"]).T,
        "linear.bias": scale * np.asarray(tower["projection"]["bias"])})
    modules.append((os.path.basename(dense_dir), "sentence_transformers.models.Dense"))
    norm_dir = os.path.join(directory, f"{len(modules)}_LayerNorm")
    _write_json(os.path.join(norm_dir, "config.json"), dict(dimension=config.projection_size))
    _save_module_tensors(norm_dir, {"norm.weight": tower["projection_layer_norm"]["scale"],
                                    "norm.bias": tower["projection_layer_norm"]["bias"]})
    modules.append((os.path.basename(norm_dir), "sentence_transformers.models.LayerNorm"))
  if config.normalize:
    modules.append((f"{len(modules)}_Normalize", "sentence_transformers.models.Normalize"))
    os.makedirs(os.path.join(directory, modules[-1][0]), exist_ok=True)
  _write_json(os.path.join(directory, "modules.json"), [
      dict(idx=index, name=str(index), path=path, type=kind)
      for index, (path, kind) in enumerate(modules)])
  return True


def export_tower(directory: str, tower: dict[str, Any], config: retriever.RetrieverConfig,
                 bert_dir: str, max_length: int) -> dict[str, Any]:
  """Writes one retriever tower (its params `tower`: bert, projection...) as a Hugging Face
  directory, with sentence-transformers modules where its pooling allows; what export.json
  says of it."""
  save_hf_bert(directory, tower["bert"], config.bert)
  copy_tokenizer(bert_dir, directory)
  has_modules = sentence_transformers_modules(directory, tower, config, max_length)
  described = dict(path=os.path.basename(directory), max_length=max_length,
                   pooling=config.pooling, projection_size=config.projection_size,
                   normalize=config.normalize, sentence_transformers=has_modules)
  if has_modules and config.projection_size:
    described["dense_module_scale"] = float(
        np.sqrt(SENTENCE_TRANSFORMERS_LAYER_NORM_EPS / config.bert.layer_norm_eps))
  return described


def export_bert(directory: str, params: dict[str, Any], config: BertConfig,
                bert_dir: str) -> dict[str, Any]:
  """Writes a BERT (e.g. an ORQA reader's) as a Hugging Face BertModel directory."""
  save_hf_bert(directory, params, config)
  copy_tokenizer(bert_dir, directory)
  return dict(path=os.path.basename(directory))

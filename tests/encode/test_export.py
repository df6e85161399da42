"""A retriever tower exported as a Hugging Face directory gives our embeddings in PyTorch: through
sentence-transformers (pooling, projection, normalisation as modules) and through `transformers`
with the pooling done by hand; the BERT pooler's output has no sentence-transformers module."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from orqa_realm.data.pretrained import resolve_model_dir
from orqa_realm.data.tokenization import Tokenizer
from orqa_realm.encode import export
from orqa_realm.modeling import partitioning, retriever
from tests.tasks.tiny_ict import TINY_RETRIEVER

TEXTS = ["who won super bowl 50?", "Where is the Eiffel Tower", "a b c d e f g h i j k"]


def our_embeddings(config, params, bert_dir):
  inputs = Tokenizer(resolve_model_dir(bert_dir)).encode_queries(TEXTS, config.query_length)
  return np.asarray(retriever.DualEncoder(config).apply(
      {"params": params}, inputs, method=retriever.DualEncoder.embed_queries)), inputs


@pytest.mark.parametrize("pooling, projection_size, normalize", [
    ("cls", 16, False), ("mean", 0, True), ("mean", 16, True)])
def test_sentence_transformers_and_transformers_give_our_embeddings(
    tiny_bert_dir, tmp_path, pooling, projection_size, normalize):
  import torch
  import transformers
  from sentence_transformers import SentenceTransformer

  config = dataclasses.replace(TINY_RETRIEVER, pooling=pooling, projection_size=projection_size,
                               normalize=normalize, share_encoders=False)
  params = partitioning.unbox(retriever.init_params(config, jax.random.key(3)))
  ours, inputs = our_embeddings(config, params, tiny_bert_dir)
  directory = str(tmp_path / "query_encoder")
  described = export.export_tower(directory, params["query_encoder"], config, tiny_bert_dir,
                                  config.query_length)
  assert described["sentence_transformers"]
  theirs = SentenceTransformer(directory, device="cpu").encode(TEXTS, convert_to_numpy=True)
  np.testing.assert_allclose(theirs, ours, atol=1e-4)

  bert = transformers.BertModel.from_pretrained(directory).eval()
  mask = torch.tensor(np.asarray(inputs.input_mask))
  with torch.no_grad():
    hidden = bert(input_ids=torch.tensor(np.asarray(inputs.token_ids)),
                  attention_mask=mask).last_hidden_state.numpy()
  mask = mask.numpy()[..., None]
  pooled = hidden[:, 0] if pooling == "cls" else (hidden * mask).sum(1) / mask.sum(1)
  if not projection_size and not normalize:
    np.testing.assert_allclose(pooled, ours, atol=1e-4)
  elif not projection_size:
    np.testing.assert_allclose(pooled / np.linalg.norm(pooled, axis=1, keepdims=True), ours,
                               atol=1e-4)


def test_the_poolers_output_is_exported_without_sentence_transformers_modules(
    tiny_bert_dir, tmp_path):
  config = dataclasses.replace(TINY_RETRIEVER, pooling="pooled", share_encoders=True)
  params = partitioning.unbox(retriever.init_params(config, jax.random.key(0)))
  described = export.export_tower(str(tmp_path / "encoder"), params["encoder"], config,
                                  tiny_bert_dir, config.block_length)
  assert not described["sentence_transformers"]
  assert sorted(os.listdir(tmp_path / "encoder")) == sorted(
      ["config.json", "model.safetensors", *export.TOKENIZER_FILES])
  with open(tmp_path / "encoder" / "config.json") as f:
    assert json.load(f)["hidden_size"] == TINY_RETRIEVER.bert.hidden_size


@pytest.mark.slow  # real MiniLM weights: the parity users of the export rely on
@pytest.mark.parametrize("projection_size", [0, 128])
def test_minilm_exported_gives_our_embeddings_of_real_questions(minilm_dir, tmp_path,
                                                                 projection_size):
  from sentence_transformers import SentenceTransformer

  from orqa_realm.data.qa import read_squad
  from orqa_realm.modeling.hf_import import load_hf_bert
  from tests.conftest import DEMO_SQUAD

  hf = load_hf_bert(minilm_dir)
  config = retriever.RetrieverConfig(hf.config, projection_size=projection_size, pooling="mean",
                                     share_encoders=True, block_format="joined", normalize=True,
                                     query_length=64, block_length=256)
  params = partitioning.unbox(retriever.init_params(config, jax.random.key(0), hf.params))
  questions = [example.question for example in read_squad(DEMO_SQUAD)[:200]]
  inputs = Tokenizer(minilm_dir).encode_queries(questions, config.query_length)
  ours = np.asarray(retriever.DualEncoder(config).apply(
      {"params": params}, inputs, method=retriever.DualEncoder.embed_queries))
  directory = str(tmp_path / "encoder")
  export.export_tower(directory, params["encoder"], config, minilm_dir, config.query_length)
  theirs = SentenceTransformer(directory, device="cpu").encode(questions, convert_to_numpy=True)
  difference = np.abs(theirs - ours).max()
  print(f"max abs difference over {len(questions)} questions: {difference:.2e}")
  assert difference <= 1e-4

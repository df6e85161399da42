"""The Flax llama decoder on tiny random models: the cache against the uncached forward, parity
with PyTorch `transformers` through both importers (a Hugging Face directory; a GGUF written the
way llama.cpp writes one, rows permuted and tensors quantised), generation, scoring, and the
importers' refusals. The real SmolLM2 GGUF is checked in test_decoder_smollm2.py (slow)."""

from __future__ import annotations

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from orqa_realm.core.errors import InputError
from orqa_realm.data.decoder_tokenization import pad_left, pad_right
from orqa_realm.modeling import decoder, generation, llama_import

TINY = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            rms_norm_eps=1e-5, rope_theta=10000.0)


def torch_llama(tie_word_embeddings: bool, seed: int = 0) -> transformers.LlamaForCausalLM:
  """A tiny random PyTorch llama; weights at std 0.2 so that greedy choices are not near-ties."""
  torch.manual_seed(seed)
  config = transformers.LlamaConfig(**TINY, tie_word_embeddings=tie_word_embeddings,
                                    initializer_range=0.2, bos_token_id=1, eos_token_id=2,
                                    pad_token_id=0)
  return transformers.LlamaForCausalLM(config).eval()


def torch_logits(model, token_ids: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.as_tensor(token_ids, dtype=torch.long)).logits.numpy()


def flax_logits(pretrained: llama_import.PretrainedDecoder, token_ids: np.ndarray) -> np.ndarray:
  model = decoder.DecoderLM(pretrained.config)
  positions = np.broadcast_to(np.arange(token_ids.shape[1]), token_ids.shape)
  hidden = model.apply({"params": pretrained.params}, token_ids, positions,
                       np.ones_like(token_ids)).hidden
  return np.asarray(model.apply({"params": pretrained.params}, hidden,
                                method=decoder.DecoderLM.logits))


def llama_cpp_permute(weight: np.ndarray, heads: int) -> np.ndarray:
  """The row permutation llama.cpp's converter applies to query and key projections."""
  return (weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
          .swapaxes(1, 2).reshape(weight.shape))


def write_gguf(path, model: transformers.LlamaForCausalLM, *, architecture: str = "llama",
               types: dict[str, gguf.GGMLQuantizationType] | None = None) -> dict[str, np.ndarray]:
  """Writes `model` as llama.cpp would: GGUF names, Q/K rows permuted, tensors of `types`
  (name -> type; F32 otherwise) quantised. Returns the tensors as written, dequantised."""
  config = model.config
  writer = gguf.GGUFWriter(str(path), architecture)
  writer.add_block_count(config.num_hidden_layers)
  writer.add_context_length(config.max_position_embeddings)
  writer.add_embedding_length(config.hidden_size)
  writer.add_feed_forward_length(config.intermediate_size)
  writer.add_head_count(config.num_attention_heads)
  writer.add_head_count_kv(config.num_key_value_heads)
  writer.add_layer_norm_rms_eps(config.rms_norm_eps)
  writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
  writer.add_vocab_size(config.vocab_size)
  names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
           "output_norm.weight", "lm_head.weight": "output.weight"}
  per_layer = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
               "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
               "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
  for layer in range(config.num_hidden_layers):
    for hf_name, gguf_name in per_layer.items():
      names[f"model.layers.{layer}.{hf_name}.weight"] = f"blk.{layer}.{gguf_name}.weight"
  written = {}
  state = model.state_dict()
  for hf_name, gguf_name in names.items():
    if hf_name == "lm_head.weight" and config.tie_word_embeddings:
      continue
    tensor = state[hf_name].numpy().astype(np.float32)
    if gguf_name.endswith("attn_q.weight"):
      tensor = llama_cpp_permute(tensor, config.num_attention_heads)
    elif gguf_name.endswith("attn_k.weight"):
      tensor = llama_cpp_permute(tensor, config.num_key_value_heads)
    kind = (types or {}).get(gguf_name, gguf.GGMLQuantizationType.F32)
    if kind == gguf.GGMLQuantizationType.F32:
      writer.add_tensor(gguf_name, tensor)
      written[gguf_name] = tensor
    else:
      quantised = gguf.quants.quantize(tensor, kind)
      writer.add_tensor(gguf_name, quantised, raw_dtype=kind)
      written[gguf_name] = gguf.quants.dequantize(quantised, kind)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return written


@pytest.fixture(scope="module")
def tied_torch_model():
  return torch_llama(tie_word_embeddings=True)


@pytest.fixture(scope="module")
def tied_gguf(tmp_path_factory, tied_torch_model):
  path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
  write_gguf(path, tied_torch_model)
  return llama_import.load_gguf(path)


@pytest.fixture(scope="module")
def untied_hf(tmp_path_factory):
  """A tiny untied PyTorch llama, and what the Hugging Face importer reads of its directory."""
  model = torch_llama(tie_word_embeddings=False, seed=1)
  model_dir = tmp_path_factory.mktemp("hf_llama")
  model.save_pretrained(model_dir, safe_serialization=True)
  return model, llama_import.load_hf_llama(model_dir)


TOKENS = np.random.default_rng(0).integers(3, TINY["vocab_size"], (2, 11)).astype(np.int32)


def test_gguf_import_matches_pytorch(tied_torch_model, tied_gguf):
  assert tied_gguf.config.tie_word_embeddings
  np.testing.assert_allclose(flax_logits(tied_gguf, TOKENS),
                             torch_logits(tied_torch_model, TOKENS), atol=1e-4)


def test_hf_directory_import_matches_pytorch(untied_hf):
  torch_model, pretrained = untied_hf
  assert not pretrained.config.tie_word_embeddings
  np.testing.assert_allclose(flax_logits(pretrained, TOKENS), torch_logits(torch_model, TOKENS),
                             atol=1e-4)


def test_rotary_rows_unpermuted():
  weight = np.arange(4 * 8 * 3, dtype=np.float32).reshape(4 * 8, 3)
  np.testing.assert_array_equal(
      llama_import.unpermute_rotary_rows(llama_cpp_permute(weight, 4), 4), weight)


def test_quantised_tensors_are_dequantised(tmp_path, tied_torch_model):
  # Quantised blocks are 32 values of a row: the tensors with 32 columns.
  types = {"blk.0.attn_q.weight": gguf.GGMLQuantizationType.Q4_1,
           "blk.1.ffn_gate.weight": gguf.GGMLQuantizationType.Q8_0,
           "token_embd.weight": gguf.GGMLQuantizationType.Q8_0}
  written = write_gguf(tmp_path / "quantised.gguf", tied_torch_model, types=types)
  params = llama_import.load_gguf(tmp_path / "quantised.gguf").params
  np.testing.assert_array_equal(params["layers"]["attention"]["query"]["kernel"][0],
                                llama_import.unpermute_rotary_rows(
                                    written["blk.0.attn_q.weight"], 4).T)
  np.testing.assert_array_equal(params["layers"]["gate"]["kernel"][1],
                                written["blk.1.ffn_gate.weight"].T)
  np.testing.assert_array_equal(params["embed_tokens"]["embedding"], written["token_embd.weight"])
  # Quantisation changed them: the test would not notice a skipped dequantisation otherwise.
  assert not np.array_equal(written["token_embd.weight"],
                            tied_torch_model.state_dict()["model.embed_tokens.weight"].numpy())


def test_unsupported_tensor_type_named(tmp_path, tied_torch_model):
  path = tmp_path / "k_quant.gguf"
  write_gguf(path, tied_torch_model)
  # Rewrite one tensor as Q6_K (raw bytes of the right size): a type this importer refuses.
  reader = gguf.GGUFReader(str(path))
  writer = gguf.GGUFWriter(str(tmp_path / "k_quant2.gguf"), "llama")
  for field in reader.fields.values():
    if field.name.startswith("llama.") and field.types:
      writer.add_key_value(field.name, field.contents(), field.types[0])
  for tensor in reader.tensors:
    data = np.asarray(tensor.data)
    if tensor.name == "blk.1.ffn_up.weight":
      block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q6_K]
      # 48 x 32 values do not make whole 256-value K-blocks: store 256 x 8 instead.
      data = np.zeros((8, block_bytes[1]), np.uint8)
      writer.add_tensor(tensor.name, data, raw_dtype=gguf.GGMLQuantizationType.Q6_K)
    else:
      writer.add_tensor(tensor.name, data)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  with pytest.raises(InputError, match=r"blk\.1\.ffn_up\.weight: type Q6_K") as error:
    llama_import.load_gguf(tmp_path / "k_quant2.gguf")
  assert "k_quant2.gguf" in str(error.value)


def test_unsupported_architecture_named(tmp_path, tied_torch_model):
  path = tmp_path / "gpt2.gguf"
  write_gguf(path, tied_torch_model, architecture="gpt2")
  with pytest.raises(InputError, match="unsupported architecture 'gpt2'") as error:
    llama_import.load_gguf(path)
  assert "general.architecture" in str(error.value) and "gpt2.gguf" in str(error.value)


def test_missing_and_misshaped_tensors_named(tmp_path, untied_hf):
  from safetensors.numpy import load_file, save_file

  torch_model, _ = untied_hf
  model_dir = tmp_path / "broken"
  torch_model.save_pretrained(model_dir, safe_serialization=True)
  tensors = load_file(model_dir / "model.safetensors")
  del tensors["model.layers.1.mlp.up_proj.weight"]
  tensors["model.norm.weight"] = np.zeros(5, np.float32)
  save_file(tensors, model_dir / "model.safetensors")
  with pytest.raises(InputError) as error:
    llama_import.load_hf_llama(model_dir)
  message = str(error.value)
  assert "layers/up/kernel missing for layers [1]" in message
  assert "model.norm.weight: shape (5,)" in message and "model.safetensors" in message


def test_cache_equals_uncached_forward(tied_gguf):
  """A prompt written into the cache in one call, then one token a call, gives the hidden
  states of one uncached forward over the whole sequence."""
  model = decoder.DecoderLM(tied_gguf.config)
  params = tied_gguf.params
  length = TOKENS.shape[1]
  positions = np.broadcast_to(np.arange(length), TOKENS.shape)
  full = model.apply({"params": params}, TOKENS, positions, np.ones_like(TOKENS)).hidden
  cache = decoder.empty_cache(tied_gguf.config, 2, length + 3)
  key_mask = np.ones((2, length + 3), bool)
  prefix = 6
  output = model.apply({"params": params}, TOKENS[:, :prefix], positions[:, :prefix], key_mask,
                       cache, 0)
  pieces = [output.hidden]
  for index in range(prefix, length):
    output = model.apply({"params": params}, TOKENS[:, index:index + 1],
                         positions[:, index:index + 1], key_mask, output.cache, index)
    pieces.append(output.hidden)
  np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-5)


def test_left_padding_does_not_change_a_prompt(tied_gguf):
  """A prompt's last hidden state is the same alone and left-padded in a batch with a longer
  one: padding slots are never attended to and positions count real tokens only."""
  model = decoder.DecoderLM(tied_gguf.config)
  short, long = TOKENS[0, :4].tolist(), TOKENS[1].tolist()
  batch = pad_left([short, long], pad_id=0)
  positions = generation.prompt_positions(jnp.asarray(batch.input_mask))
  cache = decoder.empty_cache(tied_gguf.config, 2, batch.token_ids.shape[1])
  padded = model.apply({"params": tied_gguf.params}, batch.token_ids, positions,
                       batch.input_mask, cache, 0).hidden
  alone = model.apply({"params": tied_gguf.params}, np.asarray([short]),
                      np.arange(4)[None], np.ones((1, 4))).hidden
  np.testing.assert_allclose(padded[0, -1], alone[0, -1], atol=1e-5)


def test_greedy_generation_matches_pytorch(untied_hf):
  """A left-padded batch generated greedily equals PyTorch's generate() of each prompt alone."""
  torch_model, pretrained = untied_hf
  prompts = [TOKENS[0, :3].tolist(), TOKENS[1].tolist(), TOKENS[0, 2:9].tolist()]
  batch = pad_left(prompts, pad_id=0)
  settings = generation.SamplingSettings(max_new_tokens=12)
  tokens = np.asarray(generation.generate(
      decoder.DecoderLM(pretrained.config), pretrained.params, batch.token_ids,
      batch.input_mask, jax.random.key(0), settings=settings, eos_id=2, pad_id=0))
  for row, prompt in enumerate(prompts):
    with torch.no_grad():
      expected = torch_model.generate(torch.tensor([prompt]), max_new_tokens=12,
                                      do_sample=False, eos_token_id=2, pad_token_id=0,
                                      attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
    expected = expected[0, len(prompt):].tolist()
    assert tokens[row, :len(expected)].tolist() == expected
    assert (tokens[row, len(expected):] == 0).all()


def test_generation_stops_at_eos_and_pads(tied_gguf):
  """Every token after a sequence's end-of-sequence token is padding."""
  model = decoder.DecoderLM(tied_gguf.config)
  batch = pad_left([TOKENS[0].tolist(), TOKENS[1, :5].tolist()], pad_id=0)
  settings = generation.SamplingSettings(max_new_tokens=20, temperature=1.5)
  greedy_first = np.asarray(generation.generate(
      model, tied_gguf.params, batch.token_ids, batch.input_mask, jax.random.key(3),
      settings=settings, eos_id=-1, pad_id=0))
  eos = int(greedy_first[0, 4])  # a token the first row does emit, as its "end"
  tokens = np.asarray(generation.generate(
      model, tied_gguf.params, batch.token_ids, batch.input_mask, jax.random.key(3),
      settings=settings, eos_id=eos, pad_id=0))
  first_end = list(tokens[0]).index(eos)
  assert first_end <= 4
  np.testing.assert_array_equal(tokens[0, :first_end + 1], greedy_first[0, :first_end + 1])
  assert (tokens[0, first_end + 1:] == 0).all()


def test_samples_share_their_prompts_prefill(tied_gguf):
  """n samples of each prompt from one prefill are the continuations of the prompts repeated n
  times: greedy, token for token, and sampled with the same key."""
  model = decoder.DecoderLM(tied_gguf.config)
  prompts = [TOKENS[0].tolist(), TOKENS[1, :5].tolist()]
  repeated = [prompt for prompt in prompts for _ in range(3)]
  for settings in (generation.SamplingSettings(max_new_tokens=8),
                   generation.SamplingSettings(max_new_tokens=8, temperature=1.0, top_p=0.9)):
    def run(rows, samples):
      batch = pad_left(rows, pad_id=0)
      return np.asarray(generation.generate(
          model, tied_gguf.params, batch.token_ids, batch.input_mask, jax.random.key(4),
          settings=settings, eos_id=-1, pad_id=0, samples_per_prompt=samples))
    shared = run(prompts, 3)
    assert shared.shape == (6, 8)
    np.testing.assert_array_equal(shared, run(repeated, 1))


def test_sampling_is_seeded():
  logits = jnp.asarray(np.random.default_rng(1).normal(size=(4, 50)), jnp.float32)
  settings = generation.SamplingSettings(temperature=1.0, top_p=0.9)
  first = generation.choose_tokens(logits, jax.random.key(5), settings)
  np.testing.assert_array_equal(first, generation.choose_tokens(logits, jax.random.key(5),
                                                                settings))
  greedy = generation.choose_tokens(logits, jax.random.key(5), generation.SamplingSettings())
  np.testing.assert_array_equal(greedy, np.argmax(logits, axis=-1))


def test_nucleus_against_numpy():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(3, 20)).astype(np.float32) * 2
  top_p = 0.7
  kept = np.asarray(generation.nucleus_logits(jnp.asarray(logits), top_p)) > -np.inf
  for row in range(3):
    probabilities = np.exp(logits[row] - logits[row].max())
    probabilities /= probabilities.sum()
    order = np.argsort(-probabilities)
    expected = set()
    mass = 0.0
    for token in order:  # the most probable tokens until their mass reaches top_p
      expected.add(token)
      mass += probabilities[token]
      if mass >= top_p:
        break
    assert set(np.flatnonzero(kept[row])) == expected


def test_token_log_probs_against_full_logits(untied_hf):
  torch_model, pretrained = untied_hf
  batch = pad_right([TOKENS[0].tolist(), TOKENS[1, :6].tolist()], pad_id=0)
  scores = np.asarray(generation.token_log_probs(
      decoder.DecoderLM(pretrained.config), pretrained.params, batch.token_ids,
      batch.input_mask))
  logits = torch_logits(torch_model, TOKENS)  # the first row, unpadded
  log_probs = logits[0] - np.log(np.exp(logits[0]).sum(-1, keepdims=True))
  np.testing.assert_allclose(scores[0], log_probs[np.arange(10), TOKENS[0, 1:]], atol=1e-4)
  short = torch_logits(torch_model, TOKENS[1:, :6])[0]
  short = short - np.log(np.exp(short).sum(-1, keepdims=True))
  np.testing.assert_allclose(scores[1, :5], short[np.arange(5), TOKENS[1, 1:6]], atol=1e-4)


def test_bfloat16_and_remat_forward(tied_gguf):
  """bfloat16 compute stays close to float32; rematerialisation changes nothing forward and
  the gradients agree."""
  config = tied_gguf.config
  params = tied_gguf.params
  positions = np.broadcast_to(np.arange(TOKENS.shape[1]), TOKENS.shape)

  def loss(model, params):
    hidden = model.apply({"params": params}, TOKENS, positions, np.ones_like(TOKENS)).hidden
    return model.apply({"params": params}, hidden, method=decoder.DecoderLM.logits).std()

  plain, plain_grads = jax.value_and_grad(loss, argnums=1)(decoder.DecoderLM(config), params)
  remat, remat_grads = jax.value_and_grad(loss, argnums=1)(
      decoder.DecoderLM(config, remat="full"), params)
  np.testing.assert_allclose(remat, plain, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), remat_grads,
               plain_grads)
  half = loss(decoder.DecoderLM(config, dtype=jnp.bfloat16), params)
  np.testing.assert_allclose(half, plain, rtol=2e-2)

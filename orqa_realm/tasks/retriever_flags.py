"""Flags shared by every task that trains the dual-encoder retriever (ICT, ORQA, DPR, ANCE,
REALM)."""

from __future__ import annotations

from absl import flags

from orqa_realm.core import checkpoints
from orqa_realm.data.blocks import BLOCK_FORMATS
from orqa_realm.core.errors import InputError
from orqa_realm.modeling.hf_import import load_hf_bert, read_config
from orqa_realm.modeling.pretrained import resolve_model_dir
from orqa_realm.modeling.retriever import RetrieverConfig

BLOCK_STORE = flags.DEFINE_string(
    "block_store", None, "Block store directory (built with python -m orqa_realm.preprocess).")
BERT = flags.DEFINE_string(
    "bert", "minilm", "Hugging Face BERT directory (config.json, model.safetensors, vocab) or a "
    "packaged model name ('minilm'): the architecture, the tokenizer, and the initial weights "
    "unless --from_scratch.")
FROM_SCRATCH = flags.DEFINE_bool(
    "from_scratch", False, "Initialise BERT randomly (keeping --bert's architecture and vocab).")
SHARE_ENCODERS = flags.DEFINE_bool(
    "share_encoders", False, "One BERT for queries and blocks (the ORQA reference code) instead "
    "of two (the paper).")
PROJECTION_SIZE = flags.DEFINE_integer(
    "projection_size", 128, "Retrieval embedding size after dense + LayerNorm; 0: no projection.")
POOLING = flags.DEFINE_enum(
    "pooling", "pooled", ["pooled", "cls", "mean"],
    "Vector a tower projects: BERT's pooler output on [CLS] (ORQA), the raw [CLS] state, or the "
    "mean over tokens (how sentence-transformers models such as MiniLM were trained).")
BLOCK_FORMAT = flags.DEFINE_enum(
    "block_format", "pair", sorted(BLOCK_FORMATS),
    "Block input: 'pair' = [CLS] title [SEP] text [SEP] with the text as segment 1 (ORQA); "
    "'joined' = [CLS] title text [SEP] in one segment (sentence-transformers, BEIR).")
NORMALIZE_EMBEDDINGS = flags.DEFINE_bool(
    "normalize_embeddings", False, "L2-normalise query and block embeddings (cosine scores), as "
    "sentence-transformers models such as all-MiniLM-L6-v2 do.")
RETRIEVAL_SCORE_SCALE = flags.DEFINE_float(
    "retrieval_score_scale", 1.0, "Multiplies question . block scores in the training losses "
    "(ICT, ORQA) and in ORQA's span scores: an inverse temperature. 1 for ORQA's inner-product "
    "retriever; about 20 for a cosine one (--normalize_embeddings), whose scores lie in [-1, 1] "
    "and would otherwise give a nearly flat softmax. Rankings are unchanged.")
QUERY_LENGTH = flags.DEFINE_integer("query_length", 64, "Wordpieces per query, [CLS]/[SEP] included.")
BLOCK_LENGTH = flags.DEFINE_integer(
    "block_length", 288, "Wordpieces per encoded block, title and special tokens included.")

RETRIEVER_WORKDIR = flags.DEFINE_string(
    "retriever_workdir", "", "A run (ICT, DPR, ...) whose latest retriever checkpoint the "
    "retriever starts from, with that run's architecture; for ORQA, the run the --index_dir "
    "index was embedded from. Empty: --bert's weights.")
TRAIN_QA_DATASET = flags.DEFINE_string(
    "train_qa_dataset", None, "Training questions as FORMAT:PATH (see --qa_dataset).")
EVAL_QA_DATASET = flags.DEFINE_string(
    "eval_qa_dataset", "", "Held-out questions (FORMAT:PATH) on which each evaluation reports "
    "retrieval recall@k (and, for ORQA, exact match); empty: none.")
EVAL_QUESTIONS = flags.DEFINE_integer(
    "eval_questions", 0, "Most questions of --eval_qa_dataset evaluated (every n-th); 0: all.")
EVAL_RECALL_KS = flags.DEFINE_list("eval_recall_ks", ["1", "5", "20"], "Cut-offs of recall@k.")


def eval_recall_ks() -> tuple[int, ...]:
  return tuple(sorted(int(k) for k in EVAL_RECALL_KS.value))


def retriever_config() -> RetrieverConfig:
  """The retriever architecture the flags describe."""
  return RetrieverConfig(bert=read_config(resolve_model_dir(BERT.value)),
                         projection_size=PROJECTION_SIZE.value, pooling=POOLING.value,
                         share_encoders=SHARE_ENCODERS.value, block_format=BLOCK_FORMAT.value,
                         normalize=NORMALIZE_EMBEDDINGS.value)


def retriever_config_and_bert_dir() -> tuple[RetrieverConfig, str]:
  """The retriever architecture, --retriever_workdir's (a run keeps its own) or the flags', and
  --bert's directory, whose tokenizer reads the queries; a run of another BERT is refused."""
  workdir = RETRIEVER_WORKDIR.value
  config = (RetrieverConfig.from_dict(checkpoints.read_model_config(workdir)) if workdir
            else retriever_config())
  bert_dir = resolve_model_dir(BERT.value)
  if workdir and read_config(bert_dir) != config.bert:
    raise InputError("the run's BERT is not --bert's, whose tokenizer would read the queries",
                     path=workdir, field="retriever_workdir")
  return config, bert_dir


def pretrained_bert_params():
  """The BERT weights to start from, or None for --from_scratch."""
  return None if FROM_SCRATCH.value else load_hf_bert(resolve_model_dir(BERT.value)).params

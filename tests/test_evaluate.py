"""Evaluation pieces: BEIR readers, documents ranked by their best block, pytrec_eval metrics
against a hand computation, answer and gold-paragraph hits on the real SQuAD store."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from orqa_realm.encode import evaluation, significance
from orqa_realm.data import answers
from orqa_realm.data import beir
from orqa_realm.data.qa import QAExample, load_qa_dataset
from orqa_realm.core.errors import InputError
from orqa_realm.index.bm25 import BM25Searcher
from tests.conftest import DEMO_SQUAD, REPO_ROOT, subprocess_env


def test_ndcg_and_recall_equal_a_hand_computation():
  qrels = {"q1": {"d1": 1, "d2": 1}, "q2": {"d4": 2}}
  run = {"q1": {"d3": 3.0, "d1": 2.0, "d2": 1.0}, "q2": {"d5": 1.0}}
  metrics = evaluation.beir_metrics(run, qrels)
  ndcg_q1 = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
  assert metrics["ndcg_cut_10"] == pytest.approx((ndcg_q1 + 0.0) / 2)
  assert metrics["recall_100"] == pytest.approx((1.0 + 0.0) / 2)
  assert metrics["recall_1"] == pytest.approx(0.0)
  per_query = evaluation.beir_per_query(run, qrels)
  assert per_query["q1"]["ndcg_cut_10"] == pytest.approx(ndcg_q1)
  assert per_query["q2"] == {name: 0.0 for name in evaluation.BEIR_MEASURES.values()}


def test_a_document_scores_its_best_block(squad_block_store):
  store = squad_block_store
  documents = store.document_indices()
  # Two blocks of one document and one block of another.
  pair = [b for b in range(len(store) - 1) if documents[b] == documents[b + 1]][0]
  other = next(b for b in range(len(store)) if documents[b] != documents[pair])
  run = evaluation.document_run(["q"], np.array([[pair, other, pair + 1]]),
                              np.array([[1.0, 0.5, 3.0]]), store)
  assert run == {"q": {store.document_id(pair): 3.0, store.document_id(other): 0.5}}


def test_answer_and_gold_hits(squad_block_store):
  store = squad_block_store
  text = store.text(0)
  answer = " ".join(text.split()[3:6])
  example = QAExample("q?", (answer,), gold_document_id=store.document_id(0))
  far = len(store) - 1
  assert answers.answer_hits(np.array([[far, 0]]), store, [example]).tolist() == [
      [False, True]]
  assert answers.gold_hits(np.array([[0, far]]), store, [example]).tolist() == [[True, False]]
  ks, recalls = evaluation.recall_curve(np.array([[False, True], [False, False]]))
  assert ks.tolist() == [1, 2] and recalls.tolist() == [0.0, 0.5]


def test_beir_readers_on_the_real_scifact_files(shared_data):
  queries = beir.read_queries(shared_data / "scifact" / "queries.test.tsv.gz")
  qrels = beir.read_qrels(shared_data / "scifact" / "qrels.test.txt")
  assert len(queries) == 300 and len(qrels) == 300
  assert sum(len(documents) for documents in qrels.values()) == 339
  assert set(qrels) <= set(queries)


def test_beir_readers_locate_bad_lines(tmp_path):
  queries = tmp_path / "queries.tsv"
  queries.write_text("1\tA claim.\n2\n")
  with pytest.raises(InputError, match=r"queries.tsv, line 2"):
    beir.read_queries(queries)
  qrels = tmp_path / "qrels.txt"
  qrels.write_text("1 0 d1 1\n2 0 d2 yes\n")
  with pytest.raises(InputError, match=r"qrels.txt, line 2, field 'relevance'"):
    beir.read_qrels(qrels)


@pytest.fixture(scope="module")
def tiny_index(squad_block_store, tiny_bert_dir, tmp_path_factory):
  """(index root, model flags): the SQuAD store embedded by `embed` with a random tiny BERT."""
  model = [f"--bert={tiny_bert_dir}", "--projection_size=0", "--block_length=32",
           "--query_length=16", "--embed_dtype=float32"]
  index_dir = tmp_path_factory.mktemp("evaluate") / "index"
  published = subprocess.run(
      [sys.executable, "-m", "orqa_realm.embed", f"--block_store={squad_block_store.directory}",
       f"--index_dir={index_dir}", *model],
      cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
  assert published.returncode == 0, published.stderr[-3000:]
  return index_dir, model


def test_cli_writes_metrics_and_a_plot(squad_block_store, tiny_index, tmp_path):
  index_dir, model = tiny_index
  result = subprocess.run(
      [sys.executable, "-m", "orqa_realm.evaluate", f"--block_store={squad_block_store.directory}",
       f"--index_dir={index_dir}", f"--eval_qa_dataset=squad:{DEMO_SQUAD}",
       "--eval_recall_ks=1,5", f"--output_dir={tmp_path / 'eval'}", *model],
      cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / "eval" / "metrics.json") as f:
    metrics = json.load(f)
  assert metrics["num_queries"] == 8038
  recalls = metrics["answer_recall"]
  assert 0.0 <= recalls["@1"] <= recalls["@5"] <= 1.0
  assert set(metrics["gold_paragraph_recall"]) == {"@1", "@5"}
  assert (tmp_path / "eval" / "recall_at_k.png").stat().st_size > 1000
  # Each question's hits, by its SQuAD id, average to the metrics.
  per_query = significance.read_per_query(str(tmp_path / "eval"))
  assert len(set(per_query.query_ids)) == 8038 and per_query.source == metrics["source"]
  assert per_query.query_ids[0] == load_qa_dataset(f"squad:{DEMO_SQUAD}")[0].qid
  assert set(per_query.values) == {"answer_recall@1", "answer_recall@5",
                                   "gold_paragraph_recall@1", "gold_paragraph_recall@5"}
  for name, values in per_query.values.items():
    kind, k = name.split("@")
    assert set(np.unique(values)) <= {0.0, 1.0}
    assert values.mean() == pytest.approx(metrics[kind][f"@{k}"])


def test_cli_writes_each_beir_querys_metrics(squad_block_store, tiny_bert_dir, tmp_path):
  """BM25 over the SQuAD store, judged as BEIR: three queries, each judged against the
  paragraph it copies a sentence of, and one against a paragraph it does not."""
  store = squad_block_store
  judged = {"q0": 0, "q1": 40, "q2": 200}
  queries = tmp_path / "queries.tsv"
  queries.write_text("".join(f"{qid}\t{' '.join(store.text(block).split()[:12])}\n"
                             for qid, block in judged.items()))
  qrels = tmp_path / "qrels.txt"
  qrels.write_text("".join(f"{qid} 0 {store.document_id(block if qid != 'q2' else 7)} 1\n"
                           for qid, block in judged.items()))
  result = subprocess.run(
      [sys.executable, "-m", "orqa_realm.evaluate", "--retrieval=bm25",
       f"--block_store={store.directory}", f"--bert={tiny_bert_dir}",
       f"--eval_beir_queries={queries}", f"--eval_beir_qrels={qrels}",
       f"--output_dir={tmp_path / 'eval'}"],
      cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  per_query = significance.read_per_query(str(tmp_path / "eval"))
  assert per_query.query_ids == ["q0", "q1", "q2"]
  assert set(per_query.values) == set(evaluation.BEIR_MEASURES.values())
  np.testing.assert_array_equal(per_query.values["recall_1"], [1.0, 1.0, 0.0])
  for name, values in per_query.values.items():
    assert values.mean() == pytest.approx(metrics[name])


def test_cli_takes_the_query_encoder_from_the_index_and_refuses_a_contradiction(
    squad_block_store, tiny_bert_dir, tiny_index, tmp_path):
  """The index records its retriever: no setting needs repeating, a contradicting one is
  refused with both values, and a flag of another retrieval is refused as unread."""
  index_dir, _ = tiny_index
  common = [sys.executable, "-m", "orqa_realm.evaluate",
            f"--block_store={squad_block_store.directory}", f"--bert={tiny_bert_dir}",
            f"--index_dir={index_dir}", f"--eval_qa_dataset=squad:{DEMO_SQUAD}",
            "--eval_questions=20", "--embed_dtype=float32"]
  run = lambda *extra: subprocess.run(
      [*common, *extra], cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True,
      timeout=600)
  taken = run(f"--output_dir={tmp_path / 'eval'}")
  assert taken.returncode == 0, taken.stderr[-3000:]
  assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["num_queries"] == 20
  contradicted = run(f"--output_dir={tmp_path / 'eval2'}", "--pooling=mean")
  assert contradicted.returncode != 0
  assert "--pooling='mean' contradicts the index" in contradicted.stderr
  assert "whose pooling is 'pooled'" in contradicted.stderr
  longer = run(f"--output_dir={tmp_path / 'eval3'}", "--query_length=64")
  assert "--query_length=64 contradicts the index" in longer.stderr
  assert "whose query_length is 16" in longer.stderr
  unread = run(f"--output_dir={tmp_path / 'eval4'}", "--hybrid_alpha=0.5")
  assert unread.returncode != 0
  assert "--hybrid_alpha is not read by `evaluate --retrieval=dense`" in unread.stderr


# Parses each command line as `python -m orqa_realm.evaluate` would and checks its flags (no
# model is loaded); prints each refusal's message, or None.
CHECK_FLAGS = """
import json, sys
from absl import flags
from orqa_realm import evaluate
from orqa_realm.core.errors import InputError
evaluate.SETTINGS.define()
messages = []
for line in json.loads(sys.argv[1]):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["evaluate", "--eval_qa_dataset=squad:x.json", *line])
  try:
    evaluate.check_flags()
    messages.append(None)
  except InputError as e:
    messages.append(str(e))
print(json.dumps(messages))
"""


def test_each_sparse_retrieval_reads_its_own_flags_alone_or_in_a_hybrid():
  lines = [["--retrieval=hybrid", "--hybrid_sparse=deepct", "--hybrid_sparse_model=runs/d",
            "--deepct_scale=50", "--workdir=runs/dpr"],
           ["--retrieval=deepct", "--workdir=runs/d", "--deepct_k1=8"],
           ["--retrieval=hybrid", "--hybrid_sparse=deepct"],
           ["--retrieval=hybrid", "--hybrid_sparse_model=runs/d"],
           ["--retrieval=hybrid", "--hybrid_sparse=splade", "--hybrid_sparse_model=m",
            "--bm25_k1=2"],
           ["--retrieval=bm25", "--deepct_scale=50"],
           ["--retrieval=deepct", "--workdir=runs/d", "--hybrid_sparse=deepct"],
           # A hybrid's pretrained SPLADE takes its default lengths: the dense side reads them.
           ["--retrieval=splade", "--query_length=16"]]
  result = subprocess.run([sys.executable, "-c", CHECK_FLAGS, json.dumps(lines)], cwd=REPO_ROOT,
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  messages = json.loads(result.stdout.strip().splitlines()[-1])
  fused, alone, no_model, bm25_model, wrong_side, unread, not_hybrid, splade = messages
  assert fused is None and alone is None and splade is None
  assert "--hybrid_sparse=deepct needs the model of its side" in no_model
  assert "BM25 has no model" in bm25_model
  assert "--bm25_k1 is not read by `evaluate --retrieval=hybrid`" in wrong_side
  assert "--deepct_scale is not read by `evaluate --retrieval=bm25`" in unread
  assert "--hybrid_sparse is not read by `evaluate --retrieval=deepct`" in not_hybrid


@pytest.mark.slow
def test_cli_bm25_and_hybrid_retrieval(squad_block_store, tiny_bert_dir, tiny_index,
                                       tmp_path):
  store = squad_block_store
  common = [f"--block_store={store.directory}", f"--eval_qa_dataset=squad:{DEMO_SQUAD}",
            "--eval_recall_ks=1,5", f"--bm25_dir={tmp_path / 'bm25'}", f"--bert={tiny_bert_dir}"]
  bm25_run = subprocess.run(
      [sys.executable, "-m", "orqa_realm.evaluate", "--retrieval=bm25", *common,
       f"--output_dir={tmp_path / 'bm25_eval'}"],
      cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
  assert bm25_run.returncode == 0, bm25_run.stderr[-3000:]
  with open(tmp_path / "bm25_eval" / "metrics.json") as f:
    bm25_metrics = json.load(f)
  examples = load_qa_dataset(f"squad:{DEMO_SQUAD}")
  expected = BM25Searcher.build(store).search_texts([e.question for e in examples], 5)
  hits = answers.answer_hits(expected.ids, store, examples)
  assert bm25_metrics["answer_recall"] == {
      f"@{k}": v for k, v in answers.recall_at_k(hits, [1, 5]).items()}
  # BM25 is strong on SQuAD: 78% over all 36 articles, the issue measured with plain tools.
  assert bm25_metrics["answer_recall"]["@1"] > 0.7
  assert bm25_metrics["bm25"] == dict(k1=0.9, b=0.4, stemmer="english", stopwords="en",
                                     expansions="")

  # Hybrid fuses a dense index with the BM25 index saved by the first run.
  index_dir, model = tiny_index
  hybrid_run = subprocess.run(
      [sys.executable, "-m", "orqa_realm.evaluate", "--retrieval=hybrid", "--hybrid_alpha=0.5",
       "--hybrid_depth=50", f"--index_dir={index_dir}", *common,
       *model, f"--output_dir={tmp_path / 'hybrid_eval'}"],
      cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
  assert hybrid_run.returncode == 0, hybrid_run.stderr[-3000:]
  with open(tmp_path / "hybrid_eval" / "metrics.json") as f:
    hybrid = json.load(f)
  assert hybrid["fusion"] == dict(alpha=0.5, depth=50, normalization="minmax")
  assert hybrid["index_version"] == 1 and hybrid["num_queries"] == len(examples)
  assert 0.0 <= hybrid["answer_recall"]["@1"] <= hybrid["answer_recall"]["@5"] <= 1.0


@pytest.mark.slow
def test_cli_embeds_and_evaluates_a_colbert_run(squad_block_store, tiny_colbert_run, tmp_path):
  """embed publishes the tiny ColBERT's compressed index; evaluate searches it exactly and with
  PLAID (every centroid probed: the exact ranking), and refuses the flags of the other kind."""
  store = squad_block_store.directory
  command = lambda name, *flags: subprocess.run(
      [sys.executable, "-m", f"orqa_realm.{name}", f"--block_store={store}",
       f"--workdir={tiny_colbert_run}", f"--index_dir={tmp_path / 'index'}", *flags],
      cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
  embedded = command("embed", "--colbert_nbits=2", "--colbert_centroids=256",
                     "--embed_dtype=float32")
  assert embedded.returncode == 0, embedded.stderr[-3000:]
  summary = json.loads(embedded.stdout.strip().splitlines()[-1].split(": ", 1)[1])
  assert summary["kind"] == "colbert" and summary["storage"] == "residual_2bit"
  assert summary["bytes_per_vector"] == 6 and summary["checkpoint_step"] == 6
  dense_flag = command("embed", "--index_storage_dtype=int8")
  assert dense_flag.returncode != 0
  assert "--index_storage_dtype is not read by `embed of a multi-vector run`" in dense_flag.stderr
  evaluate = lambda output, *flags: command(
      "evaluate", "--retrieval=colbert", f"--eval_qa_dataset=squad:{DEMO_SQUAD}",
      "--eval_questions=40", "--eval_recall_ks=1,5,20", "--embed_dtype=float32",
      f"--output_dir={tmp_path / output}", *flags)
  exact = evaluate("exact")
  assert exact.returncode == 0, exact.stderr[-3000:]
  plaid = evaluate("plaid", "--multi_vector_backend=plaid", "--plaid_ncells=256",
                   "--plaid_centroid_score_threshold=-1e9", "--plaid_ndocs=8000")
  assert plaid.returncode == 0, plaid.stderr[-3000:]
  exact_metrics, plaid_metrics = (json.loads((tmp_path / name / "metrics.json").read_text())
                                  for name in ("exact", "plaid"))
  assert exact_metrics["retrieval"] == "colbert" and exact_metrics["num_queries"] == 40
  assert exact_metrics["index_storage"]["nbits"] == 2 and plaid_metrics["backend"] == "plaid"
  assert plaid_metrics["answer_recall"] == exact_metrics["answer_recall"]
  assert exact_metrics["first_stage_queries_per_second"] > 0
  wrong_kind = evaluate("wrong", "--hybrid_alpha=0.5")
  assert "--hybrid_alpha is not read by `evaluate --retrieval=colbert`" in wrong_kind.stderr
  exact_with_plaid_flag = evaluate("unread", "--plaid_ndocs=64")
  assert ("--plaid_ndocs is not read by `evaluate --retrieval=colbert`"
          in exact_with_plaid_flag.stderr)

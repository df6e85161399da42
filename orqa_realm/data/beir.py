"""BEIR queries (`id \\t text` TSV) and relevance judgements (TREC qrels `qid 0 docid rel`).

Both may be gzipped. A header line (BEIR's `query-id corpus-id score`) is skipped.
"""

from __future__ import annotations

import dataclasses

from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.data import files


@dataclasses.dataclass(frozen=True)
class BEIREvaluation:
  """BEIR queries and their relevance judgements, on which nDCG@10 and recall@k are measured."""
  queries: str = setting("", "BEIR queries TSV (id<TAB>text) to evaluate on, with "
                         "--eval_beir_qrels.", flag="eval_beir_queries")
  qrels: str = setting("", "TREC/BEIR qrels of --eval_beir_queries.", flag="eval_beir_qrels")
  block_depth: int = setting(
      1000, "Blocks retrieved per BEIR query before ranking their documents.",
      flag="beir_block_depth")


def read_queries(path) -> dict[str, str]:
  """{query id: text}."""
  queries = {}
  for line_number, line in files.read_lines(path):
    if not line.strip():
      continue
    fields = line.rstrip("\n").split("\t")
    if len(fields) < 2 or not fields[0] or not fields[1].strip():
      raise InputError("expected 'id<TAB>text'", path=path, line=line_number, field="text")
    if fields[0] == "query-id" or fields[0] == "_id":
      continue
    queries[fields[0]] = fields[1]
  return queries


def read_qrels(path) -> dict[str, dict[str, int]]:
  """{query id: {document id: relevance}} from TREC (`qid 0 docid rel`) or BEIR TSV
  (`qid docid rel`) lines."""
  qrels: dict[str, dict[str, int]] = {}
  for line_number, line in files.read_lines(path):
    fields = line.split()
    if not fields or fields[0] == "query-id":
      continue
    if len(fields) not in (3, 4):
      raise InputError(f"expected 'qid 0 docid relevance', got {len(fields)} fields",
                       path=path, line=line_number)
    qid, docid, relevance = fields[0], fields[-2], fields[-1]
    try:
      qrels.setdefault(qid, {})[docid] = int(relevance)
    except ValueError as e:
      raise InputError(f"relevance {relevance!r} is not an integer", path=path,
                       line=line_number, field="relevance") from e
  return qrels

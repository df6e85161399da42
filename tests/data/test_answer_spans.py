"""Answer spans of blocks: wordpiece matching on word boundaries, regexes, reader labels."""

import numpy as np

from orqa_realm.data import answer_spans
from orqa_realm.data.answers import normalize_answer
from orqa_realm.modeling.reader import enumerate_spans
from tests.conftest import DEMO_SQUAD


def spans_of(tokenizer, text, answers, width=10):
  (ids, offsets), = tokenizer.tokenize_with_offsets([text])
  found = answer_spans.text_answer_spans(text, np.asarray(ids), offsets, answers,
                                         answer_spans.continuation_mask(tokenizer), width)
  return [text[offsets[start][0]:offsets[end][1]] for start, end in found]


def test_text_answers_match_whole_words_only(tokenizer):
  text = "The stadium opened in the 1930s and was rebuilt in 1930 by the city."
  assert spans_of(tokenizer, text, ["1930"]) == ["1930"]  # not the "1930" of "1930s"
  # Normalised as for EM: with or without the article, every span scoring EM is an answer.
  assert spans_of(tokenizer, text, ["the Stadium!"]) == ["The stadium", "stadium"]
  assert spans_of(tokenizer, text, ["1930s"]) == ["the 1930s", "1930s"]
  assert spans_of(tokenizer, text, ["by city"]) == ["by the city", "by the city."]
  assert spans_of(tokenizer, text, ["rebuilt in 1930"], width=2) == []  # wider than the reader's
  assert spans_of(tokenizer, text, ["", "the"]) == []  # nothing left after normalisation
  # Punctuation inside an answer, which matching the answer's wordpieces would miss.
  assert spans_of(tokenizer, "It ended 15\u20131 for them.", ["15\u20131"]) == ["15\u20131"]


def test_squad_answers_are_found_in_their_paragraphs(tokenizer):
  from orqa_realm.data.documents import load_documents
  from orqa_realm.data.qa import read_squad

  paragraphs = {doc.doc_id: doc.text for doc in load_documents(f"squad:{DEMO_SQUAD}")}
  examples = read_squad(DEMO_SQUAD)[::40][:100]
  continuation = answer_spans.continuation_mask(tokenizer)
  found_any = 0
  for example in examples:
    text = paragraphs[example.gold_document_id]
    (ids, offsets), = tokenizer.tokenize_with_offsets([text])
    spans = answer_spans.text_answer_spans(text, np.asarray(ids), offsets, example.answers,
                                           continuation, 10)
    found_any += bool(spans)
    normalized_answers = {normalize_answer(answer) for answer in example.answers}
    for start, end in spans:
      assert normalize_answer(text[offsets[start][0]:offsets[end][1]]) in normalized_answers
  # SQuAD answers are spans of their paragraph; the misses are answers over 10 wordpieces.
  assert found_any >= 97, found_any


def test_regex_answers_match_whole_spans(tokenizer):
  text = "Paris, France hosted it in 1924."
  (ids, offsets), = tokenizer.tokenize_with_offsets([text])
  found = answer_spans.regex_answer_spans(text, offsets, [r"Paris(, France)?", r"19\d\d"], 10)
  assert [text[offsets[s][0]:offsets[e][1]] for s, e in found] == ["Paris", "Paris, France", "1924"]


def test_span_labels_follow_the_block_offset():
  spans = enumerate_spans(8, 3)
  labels = answer_spans.span_labels(spans.starts, spans.ends, 4, [(0, 1), (3, 3)])
  marked = {(int(s), int(e)) for s, e, label in zip(spans.starts, spans.ends, labels) if label}
  assert marked == {(4, 5), (7, 7)}
  assert not answer_spans.span_labels(spans.starts, spans.ends, 4, []).any()


def test_block_matcher_agrees_with_has_answer(squad_block_store):
  from orqa_realm.data.answers import has_answer

  store = squad_block_store
  matcher = answer_spans.BlockAnswerMatcher(store, cache_size=64)
  blocks = np.arange(0, len(store), 7)
  for answers, kind in [(("Denver Broncos",), "text"), (("the 1930s", "Warsaw"), "text"),
                        (("1930",), "text"), ((r"Super\s+Bowl \d+",), "regex"), ((), "text")]:
    expected = [has_answer(store.text(int(b)), answers, kind) for b in blocks]
    # Twice: the second pass reads the cached normalised texts.
    assert matcher.has_answer(blocks, answers, kind).tolist() == expected
    assert matcher.has_answer(blocks, answers, kind).tolist() == expected
  assert matcher.has_answer(blocks, ("Denver Broncos",), "text").any()

"""Salient spans: spaCy entities and rule dates on real SQuAD paragraphs, their wordpiece offsets,
and the annotation written beside a block store (and refused for another store)."""

import shutil

import pytest

from orqa_realm.data import salient_spans
from orqa_realm.data.blocks import BlockStore
from orqa_realm.core.errors import InputError

pytest.importorskip("spacy")


@pytest.fixture(scope="module")
def nlp():
  return salient_spans.load_ner()


@pytest.fixture(scope="module")
def annotated_store(salient_squad_store):
  return salient_squad_store, salient_spans.SalientSpans(salient_squad_store)


@pytest.mark.parametrize("text,dates", [
    ("The game was played on February 7, 2016, at Levi's Stadium.", ["February 7, 2016"]),
    ("Tesla moved to New York on 6 June 1884 and later, in June 1885, left.",
     ["6 June 1884", "June 1885"]),
    ("Warsaw grew in the 1990s and again after 2004.", ["the 1990s", "2004"]),
    ("In 1933 the station moved; 1,500 people, 2000 km and $1999 are not dates.", ["1933"]),
    ("Version 2016.3 and 12016 are numbers.", []),
])
def test_rule_dates(text, dates):
  assert [text[start:end] for start, end in salient_spans.rule_dates(text)] == dates


def test_overlapping_spans_keep_the_longest_and_articles_are_trimmed():
  text = "the National Football Conference ( NFC"
  assert salient_spans.trim_span(text, 0, 34) == (4, 32)
  merged = salient_spans.merge_spans([(0, 4, "ORG"), (0, 10, "ORG"), (8, 12, "DATE"),
                                      (20, 24, "GPE"), (22, 30, "PERSON")])
  assert merged == [(0, 10, "ORG"), (22, 30, "PERSON")]


def test_entities_and_dates_of_real_squad_paragraphs(annotated_store):
  store, spans = annotated_store
  # Paragraph 1 of "Super Bowl 50" and its first block.
  text = store.text(0)
  found = {(text[span.char_start:span.char_end], span.label) for span in spans.spans(0)}
  for expected in [("February 7, 2016", "DATE"), ("Carolina Panthers", "ORG"),
                   ("Santa Clara", "GPE"), ("National Football League", "ORG"),
                   ("Levi's Stadium", "FAC")]:
    assert expected in found, (expected, sorted(found))
  # Scores and other numbers are not salient.
  assert "24–10" not in {span_text for span_text, _ in found}


def test_wordpiece_offsets_cover_exactly_the_span_text(annotated_store, tokenizer):
  store, spans = annotated_store
  checked = 0
  for block in range(len(store)):
    text, token_ids = store.text(block), store.token_ids(block)
    char_spans = store.token_char_spans(block)
    for span in spans.spans(block):
      assert 0 <= span.token_start < span.token_end <= len(token_ids)
      # The wordpieces start and end inside the span (the span's own wordpieces, no neighbour).
      assert char_spans[span.token_start, 1] > span.char_start
      assert char_spans[span.token_end - 1, 0] < span.char_end
      pieces = tokenizer.decode(token_ids[span.token_start:span.token_end])
      assert pieces.replace(" ", "") == tokenizer.decode(
          tokenizer.tokenize([text[span.char_start:span.char_end]])[0]).replace(" ", "")
      checked += 1
  assert checked > 500


def test_the_annotation_belongs_to_its_store(annotated_store, tmp_path, nlp):
  store, spans = annotated_store
  assert spans.manifest["num_spans"] == sum(len(spans.array(b)) for b in range(len(store)))
  with pytest.raises(InputError, match="already exists"):
    salient_spans.annotate_store(store, nlp)
  # A copy of the annotation beside another store is refused, naming the fingerprint.
  other = tmp_path / "other"
  shutil.copytree(store.directory, other)
  manifest = (other / "manifest.json").read_text().replace(store.fingerprint, "0" * 16)
  (other / "manifest.json").write_text(manifest)
  with pytest.raises(InputError, match="store_fingerprint"):
    salient_spans.SalientSpans(BlockStore(other))
  shutil.rmtree(other / salient_spans.DIRECTORY)
  with pytest.raises(InputError, match="--salient_spans"):
    salient_spans.SalientSpans(BlockStore(other))

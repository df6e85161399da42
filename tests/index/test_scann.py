"""ScaNN through our searcher against exact search on real MiniLM embeddings of SQuAD blocks."""

import pathlib

import numpy as np
import pytest

from orqa_realm.core.errors import InputError
from orqa_realm.index.exact import ExactSearcher
from orqa_realm.index.scann_index import (DOCIDS_FILE, MIN_ROWS_FOR_TREE, ScannConfig,
                                          ScannSearcher)
from tests.index.code_running_pickle import code_running_pickle


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
  return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact)]))


@pytest.mark.parametrize("config", [
    ScannConfig(),  # the defaults: below MIN_ROWS_FOR_TREE rows, AH + reorder without a tree
    # A tree of ~sqrt(N) leaves. On so small a corpus a query's neighbours spread over many
    # leaves, and ScaNN's k-means is not seeded, so recall varies between processes: searching
    # 30 of 40 leaves gave 0.978-0.994 over 9 processes (20 of 40: 0.943-0.978; 4: 0.74).
    ScannConfig(num_leaves=40, num_leaves_to_search=30),
], ids=["default", "tree"])
def test_recall_at_10_against_exact(squad_minilm_embeddings, config):
  blocks, queries, _ = squad_minilm_embeddings
  exact = ExactSearcher(blocks).search(queries, 10)
  found = ScannSearcher.build(blocks, config).search(queries, 10)
  assert recall_at_k(found.ids, exact.ids) >= 0.95
  # Re-scored exactly: a block ScaNN returns carries its true inner product.
  true_scores = np.einsum("qd,qkd->qk", queries, blocks[found.ids])
  np.testing.assert_allclose(found.scores, true_scores, rtol=1e-4, atol=1e-4)


def test_defaults_follow_the_corpus_size():
  small = ScannConfig().resolved(1000)
  assert small.num_leaves == 0 and small.reorder_num_neighbors == 100
  large = ScannConfig(num_neighbors=20).resolved(1_000_000)
  assert large.num_leaves == 1000 and large.num_leaves_to_search == 100
  assert large.training_sample_size == 100_000 and large.reorder_num_neighbors == 200
  assert ScannConfig().resolved(MIN_ROWS_FOR_TREE).num_leaves == 128
  # ~100 training rows per leaf once leaves outgrow the 100k-row sample.
  assert ScannConfig(num_leaves=3000).resolved(10_000_000).training_sample_size == 300_000
  assert ScannConfig(num_leaves=3000).resolved(200_000).training_sample_size == 200_000


def test_save_and_load_give_the_same_results(squad_minilm_embeddings, tmp_path):
  blocks, queries, _ = squad_minilm_embeddings
  searcher = ScannSearcher.build(blocks, ScannConfig(num_leaves=40, num_leaves_to_search=20))
  searcher.save(str(tmp_path / "first"))
  # Saved with relative paths: the directory still loads after a move.
  (tmp_path / "first").rename(tmp_path / "moved")
  loaded = ScannSearcher.load(str(tmp_path / "moved"), searcher.config, *blocks.shape)
  before, after = searcher.search(queries, 10), loaded.search(queries, 10)
  np.testing.assert_array_equal(before.ids, after.ids)
  np.testing.assert_allclose(before.scores, after.scores)


@pytest.mark.parametrize("config", [
    ScannConfig(), ScannConfig(num_leaves=40, num_leaves_to_search=30)], ids=["default", "tree"])
def test_rows_added_by_upsert_are_found_as_in_a_rebuilt_index(squad_minilm_embeddings, config,
                                                            tmp_path):
  """An index grown by a third of the corpus (its partitions and quantizer trained on the rest)
  recalls like one built on everything, saved and loaded again without a pickle."""
  blocks, queries, _ = squad_minilm_embeddings
  kept = 2 * len(blocks) // 3
  ScannSearcher.build(blocks[:kept], config).save(str(tmp_path / "base"))
  base = ScannSearcher.load(str(tmp_path / "base"), config.resolved(kept), kept, blocks.shape[1])
  base.with_rows_added(blocks[kept:]).save(str(tmp_path / "grown"))
  grown = ScannSearcher.load(str(tmp_path / "grown"), base.config, *blocks.shape)
  assert not (tmp_path / "grown" / DOCIDS_FILE).exists()
  exact = ExactSearcher(blocks).search(queries, 10)
  recall = recall_at_k(grown.search(queries, 10).ids, exact.ids)
  rebuilt = recall_at_k(ScannSearcher.build(blocks, config).search(queries, 10).ids, exact.ids)
  print(f"recall@10: grown {recall:.3f}, rebuilt {rebuilt:.3f}")
  assert recall >= 0.95
  # The added rows keep their positions: each is its own nearest neighbour.
  assert np.mean(grown.search(blocks[kept:], 1).ids[:, 0] == np.arange(kept, len(blocks))) > 0.95
  with pytest.raises(ValueError, match="expected rows of shape"):
    grown.with_rows_added(blocks[:2, :10])


def test_leaves_to_search_trades_recall_without_a_rebuild(squad_minilm_embeddings):
  blocks, queries, _ = squad_minilm_embeddings
  exact = ExactSearcher(blocks).search(queries, 10)
  searcher = ScannSearcher.build(blocks, ScannConfig(num_leaves=40, num_leaves_to_search=2))
  recalls = [recall_at_k(searcher.with_leaves_to_search(leaves).search(queries, 10).ids, exact.ids)
             for leaves in (2, 40)]
  # Every leaf searched leaves only AH scoring + exact re-scoring between ScaNN and exact search.
  assert recalls[0] < recalls[1] and recalls[1] >= 0.99
  assert searcher.config.num_leaves_to_search == 2  # the original is unchanged
  with pytest.raises(ValueError, match="outside"):
    searcher.with_leaves_to_search(41)


@pytest.fixture(scope="module")
def small_saved_index(tmp_path_factory):
  """A ScaNN index of 300 random rows saved to a directory: (directory, searcher)."""
  embeddings = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
  searcher = ScannSearcher.build(embeddings)
  directory = tmp_path_factory.mktemp("scann") / "index"
  searcher.save(str(directory))
  return directory, searcher


def copy_of(saved, tmp_path):
  import shutil

  return pathlib.Path(shutil.copytree(saved, tmp_path / "copy"))


def test_load_never_unpickles_the_doc_ids_file(small_saved_index, tmp_path):
  directory = copy_of(small_saved_index[0], tmp_path)
  marker = tmp_path / "code_ran"
  (directory / "scann_docids.pkl").write_bytes(code_running_pickle(marker))
  with pytest.raises(InputError, match="scann_docids.pkl, which ScaNN would unpickle"):
    ScannSearcher.load(str(directory), ScannConfig(), 300, 8)
  assert not marker.exists()


@pytest.mark.parametrize("asset_path", ["../outside.npy", "/etc/hostname", "link.npy"])
def test_load_refuses_an_asset_outside_the_directory(small_saved_index, tmp_path, asset_path):
  directory = copy_of(small_saved_index[0], tmp_path)
  (tmp_path / "outside.npy").write_bytes((directory / "dataset.npy").read_bytes())
  (directory / "link.npy").symlink_to(tmp_path / "outside.npy")
  assets = directory / "scann_assets.pbtxt"
  assets.write_text(assets.read_text().replace('"dataset.npy"', f'"{asset_path}"'))
  with pytest.raises(InputError, match=f"asset '{asset_path}' lies outside the index directory"):
    ScannSearcher.load(str(directory), ScannConfig(), 300, 8)


def test_load_reads_a_saved_index_without_the_pickle_path(small_saved_index):
  directory, searcher = small_saved_index
  queries = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
  loaded = ScannSearcher.load(str(directory), searcher.config, 300, 8)
  np.testing.assert_array_equal(loaded.search(queries, 5).ids, searcher.search(queries, 5).ids)

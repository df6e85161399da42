"""ScaNN: a partitioning tree, anisotropic (AH) quantised scoring, then exact re-scoring.

The configuration follows the REALM reference (13M x 128: 1000 leaves, search 100, AH with 2
dimensions per block, reorder) with defaults scaled from the corpus size: leaves ~ sqrt(N),
a tenth of them searched, at least 100 candidates re-scored exactly. Queries go through
`search_batched_parallel`, which spreads a batch over all cores.

A saved index is read as untrusted input: ScaNN's own `load_searcher` unpickles a doc-id file
when one is present (a crafted index directory would run code) and follows the asset paths of
`scann_assets.pbtxt` wherever they point. `ScannSearcher.load` refuses both: this project never
writes doc ids (rows are block indices), and every asset must be a file inside the directory.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from orqa_realm.core.config import setting
from orqa_realm.core.errors import InputError
from orqa_realm.index.searcher import SearchResult, check_search_args

# Below this many rows, brute-force AH scoring (then exact re-scoring) is used: it is exact-er
# and fast enough. Measured (benchmarks/search.py): on SciFact's 5,183 MiniLM vectors a tree of
# sqrt(N) leaves searching a tenth found recall@10 0.79, brute-force AH 1.0 at 25k queries/s.
MIN_ROWS_FOR_TREE = 16384

# The files ScaNN's serialisation names: the asset list, and the pickled doc ids it writes when a
# searcher has them (ours never does) and unpickles on load.
ASSETS_FILE = "scann_assets.pbtxt"
DOCIDS_FILE = "scann_docids.pkl"
CONFIG_FILE = "scann_config.pb"  # read by ScaNN's C++ loader by this name
UPSERT_BATCH_SIZE = 1024  # rows ScaNN adds per call when an index grows


@dataclasses.dataclass(frozen=True)
class ScannConfig:
  """ScaNN knobs; 0 (or a negative threshold) means "derive from the corpus size".

  Attributes:
    num_leaves: partitions of the tree (default ~ sqrt(num_rows); no tree below
      MIN_ROWS_FOR_TREE rows).
    num_leaves_to_search: partitions searched per query (default num_leaves / 10).
    training_sample_size: rows the tree and the quantiser are trained on (default
      min(num_rows, max(100k, 100 x num_leaves)): k-means needs ~100 rows per leaf; with ~50,
      recall@10 fell from 0.999 to 0.85 on the 500k benchmark set).
    dimensions_per_block: AH sub-space size (2 in the reference).
    anisotropic_quantization_threshold: AH's eta threshold (0.2 is ScaNN's recommendation for
      inner product).
    reorder_num_neighbors: candidates re-scored exactly (default max(100, 10 k)).
    num_neighbors: the k the searcher is built for; `search` may ask for another.
  """
  num_leaves: int = setting(
      0, "ScaNN tree partitions; 0: ~sqrt(corpus size), no tree below 16384 rows.",
      flag="scann_num_leaves")
  num_leaves_to_search: int = setting(
      0, "ScaNN partitions searched per query; 0: a tenth of the leaves.",
      flag="scann_num_leaves_to_search")
  training_sample_size: int = setting(
      0, "Rows the ScaNN tree and quantiser train on; 0: min(N, max(100k, 100 x leaves)).",
      flag="scann_training_sample_size")
  dimensions_per_block: int = setting(
      2, "ScaNN asymmetric hashing sub-space size.", flag="scann_dimensions_per_block")
  anisotropic_quantization_threshold: float = setting(
      0.2, "ScaNN anisotropic quantisation threshold (eta).",
      flag="scann_anisotropic_threshold")
  reorder_num_neighbors: int = setting(
      0, "ScaNN candidates re-scored exactly; 0: max(100, 10 x scann_num_neighbors).",
      flag="scann_reorder")
  num_neighbors: int = setting(
      10, "The k the ScaNN index is tuned for (searches may ask for more).",
      flag="scann_num_neighbors")

  def resolved(self, num_rows: int) -> ScannConfig:
    """This configuration with every derived value filled in for a corpus of `num_rows`."""
    if num_rows < MIN_ROWS_FOR_TREE and not self.num_leaves:
      num_leaves = 0
    else:
      num_leaves = self.num_leaves or max(2, round(math.sqrt(num_rows)))
    return dataclasses.replace(
        self, num_leaves=num_leaves,
        num_leaves_to_search=(self.num_leaves_to_search or max(1, math.ceil(num_leaves / 10))
                              if num_leaves else 0),
        training_sample_size=self.training_sample_size or min(
            num_rows, max(100_000, 100 * num_leaves)),
        reorder_num_neighbors=self.reorder_num_neighbors or max(100, 10 * self.num_neighbors))


class ScannSearcher:
  """A ScaNN index over [num_rows, dim] embeddings, searched by inner product."""

  def __init__(self, searcher, config: ScannConfig, num_rows: int, dim: int):
    self._searcher = searcher
    self.config = config
    self._num_rows = num_rows
    self.dim = dim

  @classmethod
  def build(cls, embeddings: np.ndarray, config: ScannConfig = ScannConfig()) -> ScannSearcher:
    import scann  # Imported here: only ScaNN users pay for loading it.

    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    num_rows, dim = embeddings.shape
    config = config.resolved(num_rows)
    builder = scann.scann_ops_pybind.builder(embeddings, config.num_neighbors, "dot_product")
    if config.num_leaves:
      builder = builder.tree(num_leaves=config.num_leaves,
                             num_leaves_to_search=config.num_leaves_to_search,
                             training_sample_size=config.training_sample_size)
    builder = builder.score_ah(
        config.dimensions_per_block,
        anisotropic_quantization_threshold=config.anisotropic_quantization_threshold,
        training_sample_size=config.training_sample_size)
    searcher = builder.reorder(config.reorder_num_neighbors).build()
    return cls(searcher, config, num_rows, dim)

  @property
  def num_rows(self) -> int:
    return self._num_rows

  def with_leaves_to_search(self, num_leaves_to_search: int) -> ScannSearcher:
    """This index searched with another number of leaves (ScaNN takes it per query: nothing is
    rebuilt), to trade recall for speed."""
    if not self.config.num_leaves:
      raise ValueError("this index has no tree: there are no leaves to search")
    if not 1 <= num_leaves_to_search <= self.config.num_leaves:
      raise ValueError(f"num_leaves_to_search={num_leaves_to_search} outside [1, "
                       f"{self.config.num_leaves}]")
    config = dataclasses.replace(self.config, num_leaves_to_search=num_leaves_to_search)
    return ScannSearcher(self._searcher, config, self._num_rows, self.dim)

  def search(self, queries: np.ndarray, k: int) -> SearchResult:
    queries = check_search_args(queries, k, num_rows=self._num_rows, dim=self.dim)
    # Passed per query so that `with_leaves_to_search` takes effect without a rebuild.
    tree_args = (dict(leaves_to_search=self.config.num_leaves_to_search)
                 if self.config.num_leaves else {})
    ids, scores = self._searcher.search_batched_parallel(
        queries, final_num_neighbors=k,
        pre_reorder_num_neighbors=max(self.config.reorder_num_neighbors, k), **tree_args)
    return SearchResult(np.asarray(ids, np.int64), np.asarray(scores, np.float32))

  def with_rows_added(self, embeddings: np.ndarray) -> ScannSearcher:
    """This index with [n, dim] `embeddings` appended as rows num_rows...num_rows + n - 1,
    through ScaNN's upsert: the partitions and quantizer trained on the earlier rows are kept,
    nothing is retrained. The index is changed in place (its old view must not be used)."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
      raise ValueError(f"expected rows of shape [n, {self.dim}], got {embeddings.shape}")
    # ScaNN's Python wrapper upserts only by document ids, which it pickles on saving; its
    # native searcher appends rows given no index (None), and nothing is pickled.
    self._searcher.searcher.upsert([None] * len(embeddings), embeddings, UPSERT_BATCH_SIZE)
    return ScannSearcher(self._searcher, self.config, self._num_rows + len(embeddings), self.dim)

  def save(self, directory: str) -> None:
    """Writes ScaNN's assets to `directory` with relative paths, so the directory can be moved
    (index versions are built under a temporary name and renamed when complete)."""
    os.makedirs(directory, exist_ok=True)
    self._searcher.serialize(directory, relative_path=True)

  @classmethod
  def load(cls, directory: str, config: ScannConfig, num_rows: int, dim: int) -> ScannSearcher:
    """The index saved in `directory`, read without unpickling anything and only from files
    inside it (`checked_assets`)."""
    import scann

    assets = checked_assets(directory)
    # What `scann_ops_pybind.load_searcher` does, without its pickle and back-compatibility shim.
    searcher = scann.scann_ops_pybind.ScannSearcher(
        scann.scann_ops_pybind.scann_pybind.ScannNumpy(directory, assets))
    return cls(searcher, config, num_rows, dim)


def checked_assets(directory: str) -> str:
  """The text of `directory`'s scann_assets.pbtxt, once every asset it names is known to be a
  file inside `directory` (no absolute path, no `..` or link leading out) and no pickle is
  there; otherwise an InputError naming the file and the asset."""
  from google.protobuf import text_format
  from scann.scann_ops import scann_assets_pb2

  root = os.path.realpath(directory)
  if os.path.lexists(os.path.join(root, DOCIDS_FILE)):
    raise InputError(f"holds {DOCIDS_FILE}, which ScaNN would unpickle (running any code in it); "
                     "this project never writes one: the directory was not written by it",
                     path=directory)
  assets_path = os.path.join(root, ASSETS_FILE)
  if not os.path.isfile(assets_path):
    raise InputError(f"no {ASSETS_FILE}: not a ScaNN index saved by this project",
                     path=directory)
  with open(assets_path, encoding="utf-8") as f:
    text = f.read()
  try:
    assets = text_format.Parse(text, scann_assets_pb2.ScannAssets())
  except text_format.ParseError as e:
    raise InputError(f"malformed ScaNN asset list: {e}", path=assets_path) from e
  for asset_path in [CONFIG_FILE] + [asset.asset_path for asset in assets.assets]:
    target = os.path.realpath(os.path.join(root, asset_path))
    if os.path.isabs(asset_path) or os.path.commonpath([root, target]) != root:
      raise InputError(f"asset {asset_path!r} lies outside the index directory",
                       path=assets_path, field="asset_path")
    if not os.path.isfile(target):
      raise InputError(f"asset {asset_path!r} is missing", path=assets_path,
                       field="asset_path")
  return text

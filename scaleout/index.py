"""Nearest-neighbour indexes over candidate embeddings, behind one interface.

``build(ids, embeddings)`` once; ``search(queries, k)`` returns the k highest
dot-product scores and their ids for each query; ``save``/``load`` round-trip
the index through a directory.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import math
from pathlib import Path

import numpy as np

from scaleout.config import IndexConfig, from_dict
from scaleout.errors import ArtifactError, ConfigError, ScaleoutError
from scaleout.fsutil import atomic_dir, write_json

log = logging.getLogger(__name__)

INDEX_JSON = "index.json"


def check_embeddings(ids: np.ndarray, embeddings: np.ndarray) -> None:
    """ScaleoutError naming what is wrong with an (ids, embeddings) pair."""
    if embeddings.ndim != 2:
        raise ScaleoutError(f"embeddings must be [n, dim]; got shape {embeddings.shape}")
    if len(ids) != len(embeddings):
        raise ScaleoutError(f"{len(ids)} ids but {len(embeddings)} embeddings")
    if len(ids) == 0:
        raise ScaleoutError("no candidates to index")
    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():
        raise ScaleoutError(f"{int(bad.sum())} embeddings hold NaN or infinite values, the first for id {str(ids[bad.argmax()])!r}")
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != len(ids):
        raise ScaleoutError(f"id {str(unique[counts > 1][0])!r} has more than one embedding")


class Index(abc.ABC):
    kind: str

    def __init__(self):
        self.ids: np.ndarray | None = None
        self.meta: dict = {}

    @abc.abstractmethod
    def build(self, ids: np.ndarray, embeddings: np.ndarray) -> "Index":
        """Indexes ``embeddings`` ([n, dim] float32) under ``ids`` ([n] str)."""

    @abc.abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries: [batch, dim]. Returns (scores [batch, k] float32, ids [batch, k]), best first."""

    @abc.abstractmethod
    def save(self, directory: str | Path, source: dict | None = None) -> None:
        """Writes the index to ``directory`` atomically; ``source`` (what it was built from) goes in index.json."""

    @property
    def size(self) -> int:
        return 0 if self.ids is None else len(self.ids)

    def _check_k(self, k: int) -> None:
        if self.ids is None:
            raise ScaleoutError(f"the {self.kind} index is empty: call build() first")
        if not 1 <= k <= len(self.ids):
            raise ScaleoutError(f"k={k} but the index holds {len(self.ids)} candidates; expected 1 <= k <= {len(self.ids)}")


class BruteForce(Index):
    """Exact search: every query scored against every candidate (NumPy matmul)."""

    kind = "brute_force"
    QUERY_BLOCK = 256
    SCORES_PER_TILE = 1 << 22  # 16 MiB of scores at a time
    CHUNK = 1 << 18  # candidates per tile at most: one query's scores stay in L2
    FIRST = 4096  # candidates in a block's first tile, partitioned in full to set the thresholds

    def build(self, ids, embeddings):
        ids, embeddings = np.asarray(ids).astype(str), np.ascontiguousarray(embeddings, dtype=np.float32)
        check_embeddings(ids, embeddings)
        self.ids, self.embeddings = ids, embeddings
        return self

    def search(self, queries, k):
        self._check_k(k)
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.embeddings.shape[1]:
            raise ScaleoutError(f"queries have dimension {queries.shape[1]}; the index holds {self.embeddings.shape[1]}")
        # Tiles of at most QUERY_BLOCK queries x CHUNK candidates: the candidates are streamed once
        # per query block, and a tile's scores stay in cache while they are compared with each
        # query's running k-th best score. Only the few scores above it are merged, so one query
        # costs about one pass over the embeddings at memory bandwidth (see benchmarks/ann).
        chunk = max(k, min(self.CHUNK, self.SCORES_PER_TILE // min(len(queries), self.QUERY_BLOCK)))
        all_scores, all_rows = [], []
        for q0 in range(0, len(queries), self.QUERY_BLOCK):
            block = queries[q0:q0 + self.QUERY_BLOCK]
            first_rows = max(k, min(chunk, self.FIRST))
            first = block @ self.embeddings[:first_rows].T
            best_rows = _top_k_rows(first, k)
            best_scores = np.take_along_axis(first, best_rows, axis=1)
            for c0 in range(first_rows, len(self.ids), chunk):
                best_scores, best_rows = _merge_above(best_scores, best_rows, block @ self.embeddings[c0:c0 + chunk].T, c0, k)
            order = np.lexsort((best_rows, -best_scores), axis=1)  # best first; ties by row
            all_scores.append(np.take_along_axis(best_scores, order, axis=1))
            all_rows.append(np.take_along_axis(best_rows, order, axis=1))
        return np.concatenate(all_scores), self.ids[np.concatenate(all_rows)]

    def save(self, directory, source=None):
        with atomic_dir(directory) as tmp:
            np.save(tmp / "embeddings.npy", self.embeddings)
            np.save(tmp / "ids.npy", self.ids)
            write_json(tmp / INDEX_JSON, {"kind": self.kind, "candidates": len(self.ids),
                                          "dim": int(self.embeddings.shape[1]), "source": source or {}})

    @classmethod
    def load(cls, directory):
        directory = Path(directory)
        meta = _read_meta(directory, cls.kind)
        try:
            embeddings = np.load(directory / "embeddings.npy")
            ids = np.load(directory / "ids.npy")
        except (OSError, ValueError, EOFError) as exc:
            raise ArtifactError(f"{directory}: corrupt or truncated index ({type(exc).__name__}: {exc})") from exc
        if embeddings.shape != (meta["candidates"], meta["dim"]):
            raise ArtifactError(f"{directory}: embeddings have shape {embeddings.shape}; "
                                f"{INDEX_JSON} says ({meta['candidates']}, {meta['dim']})")
        index = cls().build(ids, embeddings)
        index.meta = meta
        return index


def tree_leaves(n: int, leaves_per_sqrt: float, num_leaves: int = 0) -> int:
    """Leaves of a ScaNN tree over n candidates: ``num_leaves``, else leaves_per_sqrt x sqrt(n) (at least 2)."""
    return num_leaves or max(2, round(leaves_per_sqrt * math.sqrt(n)))


class Scann(Index):
    """ScaNN (``scann_ops_pybind``), built once in the mode the catalogue size calls for.

    Modes, after ScaNN's rules of thumb (thresholds in IndexConfig):
      brute_force  exact scores (small catalogues; logged as a note)
      ah           anisotropic hashing of every candidate, then exact reordering
      tree         a partition into leaves_per_sqrt x sqrt(N) leaves, hashing
                   within the leaves searched, then exact reordering
    Search settings are arguments of ``search``: ``leaves_to_search`` (tree
    mode; default leaves_fraction of the leaves) and ``reorder`` (candidates
    rescored exactly; default max(reorder_per_k x k, reorder_min)). The
    defaults are the ANN benchmark tuner's choice (see IndexConfig).
    """

    kind = "scann"

    def __init__(self, cfg: IndexConfig = IndexConfig()):
        super().__init__()
        self.cfg = cfg
        self.directory: Path | None = None

    def build(self, ids, embeddings):
        from scann import scann_ops_pybind

        ids, embeddings = np.asarray(ids).astype(str), np.ascontiguousarray(embeddings, dtype=np.float32)
        check_embeddings(ids, embeddings)
        n, cfg = len(ids), self.cfg
        self.mode = cfg.mode if cfg.mode != "auto" else \
            "brute_force" if n < cfg.brute_force_below else "ah" if n < cfg.tree_below else "tree"
        self.num_leaves = tree_leaves(n, cfg.leaves_per_sqrt, cfg.num_leaves) if self.mode == "tree" else 0
        if self.num_leaves > n:
            raise ConfigError(f"num_leaves={self.num_leaves} but there are {n} candidates; a leaf needs at least one")
        if self.mode == "brute_force":
            log.info("%s candidates, fewer than %s: ScaNN scores them all exactly (no tree, no hashing)",
                     f"{n:,}", f"{cfg.brute_force_below:,}")
        builder = scann_ops_pybind.builder(embeddings, 10, "dot_product")
        if self.mode == "tree":
            builder = builder.tree(num_leaves=self.num_leaves, num_leaves_to_search=self.default_leaves_to_search(),
                                   training_sample_size=cfg.training_sample_size or min(n, 250_000))
        if self.mode == "brute_force":
            builder = builder.score_brute_force()
        else:
            builder = builder.score_ah(cfg.dims_per_block, anisotropic_quantization_threshold=cfg.anisotropic_threshold)
            builder = builder.reorder(self.default_reorder(10))
        self.searcher = builder.build()
        self.ids, self.dim = ids, embeddings.shape[1]
        return self

    def default_leaves_to_search(self) -> int:
        return self.cfg.leaves_to_search or max(1, math.ceil(self.num_leaves * self.cfg.leaves_fraction))

    def default_reorder(self, k: int) -> int:
        return max(k, self.cfg.reorder or max(self.cfg.reorder_per_k * k, self.cfg.reorder_min))

    def search_settings(self, k: int, leaves_to_search: int | None = None, reorder: int | None = None) -> dict:
        """The keyword arguments of ScaNN's search for these settings (defaults filled in), checked."""
        settings = {"final_num_neighbors": k}
        if leaves_to_search is not None and self.mode != "tree":
            raise ConfigError(f"leaves_to_search applies to a tree; this {self.mode} index of {len(self.ids):,} "
                              "candidates has none")
        if self.mode == "tree":
            leaves = leaves_to_search or self.default_leaves_to_search()
            if not 1 <= leaves <= self.num_leaves:
                raise ConfigError(f"leaves_to_search={leaves}; expected 1 to {self.num_leaves} (the tree's leaves)")
            settings["leaves_to_search"] = leaves
        if reorder is not None and self.mode == "brute_force":
            raise ConfigError("reorder applies to hashed scores; this index scores every candidate exactly")
        if self.mode != "brute_force":
            settings["pre_reorder_num_neighbors"] = max(k, reorder or self.default_reorder(k))
        return settings

    def search(self, queries, k, leaves_to_search: int | None = None, reorder: int | None = None):
        self._check_k(k)
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.dim:
            raise ScaleoutError(f"queries have dimension {queries.shape[1]}; the index holds {self.dim}")
        settings = self.search_settings(k, leaves_to_search, reorder)
        if len(queries) == 1:  # ScaNN's one-query call skips the batch set-up: ~25 us less per query
            rows, scores = self.searcher.search(queries[0], **settings)
            rows, scores = rows[None], scores[None]
        else:
            rows, scores = self.searcher.search_batched(queries, **settings)
        return scores.astype(np.float32, copy=False), self.ids[rows.astype(np.int64)]

    def save(self, directory, source=None):
        with atomic_dir(directory) as tmp:
            (tmp / "scann").mkdir()
            # Relative asset paths: the directory is renamed into place after writing.
            self.searcher.serialize(str(tmp / "scann"), relative_path=True)
            np.save(tmp / "ids.npy", self.ids)
            write_json(tmp / INDEX_JSON, {"kind": self.kind, "mode": self.mode, "candidates": len(self.ids),
                                          "dim": int(self.dim), "num_leaves": self.num_leaves,
                                          "config": dataclasses.asdict(self.cfg), "source": source or {}})

    @classmethod
    def load(cls, directory):
        from scann import scann_ops_pybind

        directory = Path(directory)
        meta = _read_meta(directory, cls.kind)
        index = cls(from_dict(IndexConfig, meta["config"]))
        try:
            index.ids = np.load(directory / "ids.npy")
            index.searcher = scann_ops_pybind.load_searcher(str(directory / "scann"))
        except Exception as exc:  # ScaNN raises RuntimeError/ValueError/OSError for damaged files
            raise ArtifactError(f"{directory}: corrupt or truncated ScaNN index ({type(exc).__name__}: {exc})") from exc
        if len(index.ids) != meta["candidates"]:
            raise ArtifactError(f"{directory}: {len(index.ids)} ids; {INDEX_JSON} says {meta['candidates']}")
        index.mode, index.num_leaves, index.dim = meta["mode"], meta["num_leaves"], meta["dim"]
        index.meta, index.directory = meta, directory
        return index

    def tf_state(self):
        """This index, as loaded from its directory, as ScaNN's TensorFlow state (``scann_ops.ScannState``).

        The TF ops rebuild the very searcher saved by ``save`` from its files,
        so a SavedModel answers exactly as this index does (training a second
        searcher would not: ScaNN's training is not deterministic).
        """
        from scann.scann_ops.py import scann_ops

        from scaleout.model import tf

        if self.directory is None:
            raise ScaleoutError("save the ScaNN index and load it back before turning it into TensorFlow state")
        d = self.directory / "scann"

        def blob(name):
            return tf.constant([(d / name).read_bytes() if (d / name).is_file() else b""])

        def array(name, dtype):
            return tf.constant(np.load(d / name) if (d / name).is_file() else np.zeros((), dtype))

        try:
            return scann_ops.ScannState((
                blob("scann_config.pb"), blob("serialized_partitioner.pb"), array("datapoint_to_token.npy", np.int32),
                blob("ah_codebook.pb"), array("hashed_dataset.npy", np.uint8), array("int8_dataset.npy", np.int8),
                array("int8_multipliers.npy", np.float32), array("dp_norms.npy", np.float32),
                array("dataset.npy", np.float32)))
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{d}: cannot read the saved ScaNN searcher ({exc})") from exc


KINDS = {"brute_force": BruteForce, "scann": Scann}


def _top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k highest scores of each row, in no particular order."""
    if k >= scores.shape[1]:
        return np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]


def _merge_above(best_scores: np.ndarray, best_rows: np.ndarray, scores: np.ndarray, row0: int, k: int):
    """The running top k ([batch, k] scores and rows) merged with a tile of ``scores`` [batch, chunk]
    whose column 0 is candidate ``row0``. Only scores above a query's current k-th best can enter,
    and after the first tiles there are few: they are gathered into a [batch, most hits] block
    (padded with -inf) instead of partitioning the whole tile. Ties keep the earlier row."""
    # flatnonzero: np.nonzero on a 2-D mask is ten times slower
    rows, cols = np.divmod(np.flatnonzero(scores > best_scores.min(axis=1, keepdims=True)), scores.shape[1])
    if rows.size == 0:
        return best_scores, best_rows
    counts = np.bincount(rows, minlength=len(scores))
    slot = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
    hit_scores = np.full((len(scores), counts.max()), -np.inf, np.float32)
    hit_rows = np.zeros(hit_scores.shape, np.int64)
    hit_scores[rows, slot] = scores[rows, cols]
    hit_rows[rows, slot] = cols + row0
    merged_scores = np.concatenate([best_scores, hit_scores], axis=1)
    merged_rows = np.concatenate([best_rows, hit_rows], axis=1)
    keep = _top_k_rows(merged_scores, k)
    return np.take_along_axis(merged_scores, keep, axis=1), np.take_along_axis(merged_rows, keep, axis=1)


def load_index(directory: str | Path) -> Index:
    """Loads the index saved in ``directory``, whichever kind its index.json names."""
    directory = Path(directory)
    kind = _read_meta(directory, None).get("kind")
    if kind not in KINDS:
        raise ArtifactError(f"{directory}: unknown index kind {kind!r}; expected one of {', '.join(KINDS)}")
    return KINDS[kind].load(directory)


def _read_meta(directory: Path, kind: str | None) -> dict:
    try:
        meta = json.loads((directory / INDEX_JSON).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{directory}: not a saved index ({INDEX_JSON}: {exc})") from exc
    if kind is not None and meta.get("kind") != kind:
        raise ArtifactError(f"{directory}: holds a {meta.get('kind')!r} index; expected {kind!r}")
    return meta

"""Nearest-neighbour indexes over candidate embeddings, behind one interface.

``build(ids, embeddings)`` once; ``search(queries, k)`` returns the k highest
dot-product scores and their ids for each query; ``save``/``load`` round-trip
the index through a directory.
"""

from __future__ import annotations

import abc
import json
from pathlib import Path

import numpy as np

from scaleout.errors import ArtifactError, ScaleoutError
from scaleout.fsutil import atomic_dir, write_json

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

    @abc.abstractmethod
    def build(self, ids: np.ndarray, embeddings: np.ndarray) -> "Index":
        """Indexes ``embeddings`` ([n, dim] float32) under ``ids`` ([n] str)."""

    @abc.abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries: [batch, dim]. Returns (scores [batch, k] float32, ids [batch, k]), best first."""

    @abc.abstractmethod
    def save(self, directory: str | Path) -> None:
        """Writes the index to ``directory`` atomically."""

    def _check_k(self, k: int) -> None:
        if self.ids is None:
            raise ScaleoutError(f"the {self.kind} index is empty: call build() first")
        if not 1 <= k <= len(self.ids):
            raise ScaleoutError(f"k={k} but the index holds {len(self.ids)} candidates; expected 1 <= k <= {len(self.ids)}")


class BruteForce(Index):
    """Exact search: every query scored against every candidate (NumPy matmul)."""

    kind = "brute_force"
    QUERY_BLOCK = 1024

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
        all_scores, all_rows = [], []
        for start in range(0, len(queries), self.QUERY_BLOCK):
            scores = queries[start:start + self.QUERY_BLOCK] @ self.embeddings.T
            rows = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else \
                np.tile(np.arange(scores.shape[1]), (len(scores), 1))
            top = np.take_along_axis(scores, rows, axis=1)
            order = np.argsort(-top, axis=1, kind="stable")
            all_rows.append(np.take_along_axis(rows, order, axis=1))
            all_scores.append(np.take_along_axis(top, order, axis=1))
        rows = np.concatenate(all_rows)
        return np.concatenate(all_scores), self.ids[rows]

    def save(self, directory):
        with atomic_dir(directory) as tmp:
            np.save(tmp / "embeddings.npy", self.embeddings)
            np.save(tmp / "ids.npy", self.ids)
            write_json(tmp / INDEX_JSON, {"kind": self.kind, "candidates": len(self.ids),
                                          "dim": int(self.embeddings.shape[1])})

    @classmethod
    def load(cls, directory):
        directory = Path(directory)
        meta = _read_meta(directory, cls.kind)
        try:
            embeddings = np.load(directory / "embeddings.npy")
            ids = np.load(directory / "ids.npy")
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{directory}: corrupt or truncated index ({exc})") from exc
        if embeddings.shape != (meta["candidates"], meta["dim"]):
            raise ArtifactError(f"{directory}: embeddings have shape {embeddings.shape}; "
                                f"{INDEX_JSON} says ({meta['candidates']}, {meta['dim']})")
        return cls().build(ids, embeddings)


def _read_meta(directory: Path, kind: str) -> dict:
    try:
        meta = json.loads((directory / INDEX_JSON).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{directory}: not a saved index ({INDEX_JSON}: {exc})") from exc
    if meta.get("kind") != kind:
        raise ArtifactError(f"{directory}: holds a {meta.get('kind')!r} index; expected {kind!r}")
    return meta

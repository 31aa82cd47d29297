"""Nearest-neighbour indexes over candidate embeddings, behind one interface.

``build(ids, embeddings)`` once; ``search(queries, k)`` returns the k highest
dot-product scores and their ids for each query; ``save``/``load`` round-trip
the index through a directory. The kinds: scaleout.index.brute_force (exact,
NumPy) and scaleout.index.scann; scaleout.index.load opens a saved one of
either.
"""

from __future__ import annotations

import abc
import json
from pathlib import Path

import numpy as np

from scaleout.errors import ArtifactError, ScaleoutError
from scaleout.fsutil import checksums, first_changed, write_json

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

    @staticmethod
    def _checked_queries(queries, dim: int) -> np.ndarray:
        """``queries`` as float32 [batch, dim]; ScaleoutError for another dimension or NaN / infinite values."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != dim:
            raise ScaleoutError(f"queries have dimension {queries.shape[1]}; the index holds {dim}")
        bad = ~np.isfinite(queries).all(axis=1)
        if bad.any():
            raise ScaleoutError(f"{int(bad.sum())} of {len(queries)} query embeddings hold NaN or infinite values "
                                f"(the first: query {int(bad.argmax())}); the query tower is broken, not the index")
        return queries


def read_meta(directory: Path, kind: str | None) -> dict:
    """index.json of a saved index of ``kind`` (None: any), after checking the files it lists against their
    checksums (indexes saved before checksums were recorded list none)."""
    try:
        meta = json.loads((directory / INDEX_JSON).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{directory}: not a saved index ({INDEX_JSON}: {exc})") from exc
    if kind is not None and meta.get("kind") != kind:
        raise ArtifactError(f"{directory}: holds a {meta.get('kind')!r} index; expected {kind!r}")
    changed = first_changed(directory, meta.get("files", {}))
    if changed is not None:
        raise ArtifactError(f"{directory}: corrupt or truncated index: {changed} differs from its checksum in "
                            f"{INDEX_JSON}; rebuild it with `scaleout index`")
    return meta


def write_meta(directory: Path, meta: dict) -> None:
    """index.json, written last: the index's settings and the checksum of every other file of ``directory``."""
    write_json(directory / INDEX_JSON, {**meta, "files": checksums(directory)})

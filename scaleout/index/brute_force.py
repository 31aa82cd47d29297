"""Exact search: every query scored against every candidate, NumPy matmul in cache-sized tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scaleout.errors import ArtifactError
from scaleout.fsutil import atomic_dir, save_npy
from scaleout.index.base import INDEX_JSON, Index, check_embeddings, read_meta, write_meta
from scaleout.names import BRUTE_FORCE


class BruteForce(Index):
    """Exact search: every query scored against every candidate (NumPy matmul)."""

    kind = BRUTE_FORCE
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
        queries = self._checked_queries(queries, self.embeddings.shape[1])
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
        with atomic_dir(directory, INDEX_JSON) as tmp:
            save_npy(tmp / "embeddings.npy", self.embeddings)
            save_npy(tmp / "ids.npy", self.ids)
            write_meta(tmp, {"kind": self.kind, "candidates": len(self.ids), "dim": int(self.embeddings.shape[1]),
                             "source": source or {}})

    @classmethod
    def load(cls, directory):
        directory = Path(directory)
        meta = read_meta(directory, cls.kind)
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

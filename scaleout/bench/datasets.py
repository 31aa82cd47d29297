"""Benchmark datasets: candidate vectors, queries and their exact top 100, cached on disk.

A dataset directory holds ``train.npy`` [n, dim] float32 (the candidates),
``queries.npy`` [q, dim] float32, ``neighbors.npy`` [q, 1000] int64 (exact
top 1000 by dot product, best first), ``scores.npy`` [q, 1000] float32 (their
scores) and ``dataset.json``. A cached dataset holding fewer exact neighbours
(made before recall@1000 was measured) is made again. It is written under a temporary name and renamed,
so a cached dataset is always whole.

Names:
  synthetic-<n>-<dim>          clustered vectors drawn with a seed, e.g. synthetic-1M-32
  movielens                    the run's candidate embeddings; queries are the test users'
                               query-tower embeddings (needs a trained run)
  movielens-perturbed-<n>      those candidates repeated to n rows, each copy multiplied
                               by U[0, 1) noise as in TFRS's efficient-serving tutorial

Only NumPy here (the GPU machine has no TensorFlow); ``movielens`` loads
TensorFlow to run the query tower.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaleout.errors import ConfigError
from scaleout.fsutil import atomic_dir, save_npy, write_json

log = logging.getLogger(__name__)

TRUE_K = 1000  # exact neighbours kept per query: recall@k up to k = 1000
SEED = 0
CENTRES = 2_000  # clusters of the synthetic mixture
SPREAD = 0.6  # Gaussian noise around a centre, relative to the unit-variance centres
CHUNK = 1_000_000  # rows drawn or scored at a time
_SIZE = re.compile(r"^(\d+)([KkMm]?)$")


def parse_size(text: str) -> int:
    m = _SIZE.match(text)
    if not m:
        raise ConfigError(f"size {text!r}: expected a number with an optional K or M suffix, like 100K or 1M")
    size = int(m.group(1)) * {"": 1, "K": 1_000, "M": 1_000_000}[m.group(2).upper()]
    if size < 1:
        raise ConfigError(f"size {text!r}: expected at least 1")
    return size


def clustered(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    """[n, dim] float32: a mixture around ``centres`` with log-normal norms, like trained item embeddings."""
    rows = centres[rng.integers(0, len(centres), n)] + SPREAD * rng.standard_normal((n, centres.shape[1]), np.float32)
    return rows * rng.lognormal(0.0, 0.2, (n, 1)).astype(np.float32)


def synthetic_vectors(n: int, dim: int, queries: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train [n, dim], queries [queries, dim]) from one seeded clustered mixture."""
    rng = np.random.default_rng([seed, n, dim])
    centres = rng.standard_normal((CENTRES, dim), np.float32)
    train = np.empty((n, dim), np.float32)
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        train[start:stop] = clustered(rng, centres, stop - start)
    return train, clustered(rng, centres, queries)


def exact_top_k(train: np.ndarray, queries: np.ndarray, k: int = TRUE_K) -> tuple[np.ndarray, np.ndarray]:
    """(rows [q, k] int64, scores [q, k] float32) of the exact top k by dot product, best first (scaleout's BruteForce)."""
    from scaleout.index.brute_force import BruteForce

    index = BruteForce().build(np.arange(len(train)), train)
    scores, ids = index.search(queries, min(k, len(train)))
    return ids.astype(np.int64), scores


@dataclass
class Dataset:
    name: str
    path: Path
    meta: dict

    def _load(self, name: str, mmap: bool = False) -> np.ndarray:
        return np.load(self.path / name, mmap_mode="r" if mmap else None)

    def train(self, mmap: bool = False) -> np.ndarray:
        return self._load("train.npy", mmap)

    def queries(self) -> np.ndarray:
        return self._load("queries.npy")

    def neighbors(self) -> np.ndarray:
        return self._load("neighbors.npy")

    def true_scores(self) -> np.ndarray:
        return self._load("scores.npy")

    @property
    def n(self) -> int:
        return self.meta["n"]

    @property
    def dim(self) -> int:
        return self.meta["dim"]


def open_dataset(name: str, cache: str | Path, queries: int = 2048, run: str | Path | None = None) -> Dataset:
    """The dataset ``name`` from ``cache``, made first if it is not there."""
    path = Path(cache) / name
    meta = path / "dataset.json"
    if not meta.is_file() or json.loads(meta.read_text()).get("true_k", 0) < TRUE_K:
        make_dataset(name, path, queries, run)
    return Dataset(name, path, json.loads((path / "dataset.json").read_text()))


def check_dataset_name(name: str) -> None:
    """ConfigError unless ``name`` is a dataset make_dataset makes: synthetic-<n>-<dim>, movielens or
    movielens-perturbed-<n>, each size and dimension at least 1."""
    parts = name.split("-")
    if parts[0] == "synthetic" and len(parts) == 3:
        _size_of(name, parts[1])
        if not parts[2].isdigit() or int(parts[2]) < 1:
            raise ConfigError(f"dataset {name!r}: dimension {parts[2]!r}; expected a whole number of at least 1, as "
                              "in synthetic-1M-32")
        return
    if parts[0] == "movielens" and (len(parts) == 1 or (len(parts) == 3 and parts[1] == "perturbed")):
        if len(parts) == 3:
            _size_of(name, parts[2])
        return
    raise ConfigError(f"unknown dataset {name!r}; expected synthetic-<n>-<dim> (e.g. synthetic-1M-32), "
                      "movielens or movielens-perturbed-<n>")


def _size_of(name: str, text: str) -> int:
    try:
        return parse_size(text)
    except ConfigError as exc:
        raise ConfigError(f"dataset {name!r}: {exc}") from exc


def make_dataset(name: str, path: Path, queries: int, run: str | Path | None) -> None:
    start = time.monotonic()
    check_dataset_name(name)
    parts = name.split("-")
    if parts[0] == "synthetic":
        n, dim = parse_size(parts[1]), int(parts[2])
        log.info("%s: drawing %s x %d clustered vectors (seed %d)", name, f"{n:,}", dim, SEED)
        train, q = synthetic_vectors(n, dim, queries)
        meta = {"kind": "synthetic", "seed": SEED, "centres": CENTRES, "spread": SPREAD}
    else:
        if run is None:
            raise ConfigError(f"dataset {name!r} needs a trained run: pass --run RUN (a `scaleout pipeline` run)")
        train, q, meta = movielens_vectors(run)
        if len(parts) == 3:
            train = perturbed(train, parse_size(parts[2]))
            meta = {**meta, "kind": "movielens-perturbed", "perturbation": "copies x U[0,1) elementwise, seed 0"}
    log.info("%s: exact top %d of %d queries over %s candidates", name, TRUE_K, len(q), f"{len(train):,}")
    neighbors, scores = exact_top_k(train, q)
    with atomic_dir(path, "dataset.json") as tmp:
        save_npy(tmp / "train.npy", train)
        save_npy(tmp / "queries.npy", q)
        save_npy(tmp / "neighbors.npy", neighbors)
        save_npy(tmp / "scores.npy", scores)
        write_json(tmp / "dataset.json", {**meta, "name": name, "n": int(len(train)), "dim": int(train.shape[1]),
                                          "queries": int(len(q)), "true_k": int(neighbors.shape[1]),
                                          "seconds_to_make": round(time.monotonic() - start, 1)})
    log.info("%s: cached in %s (%.0f s)", name, path, time.monotonic() - start)


def movielens_vectors(run: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """(candidate embeddings, one query per test user, meta) of a trained run."""
    from scaleout.data.dataset import Dataset as Split
    from scaleout.data.tfdata import iter_batches
    from scaleout.embed.embedding_set import EmbeddingSet
    from scaleout.names import USER_ID
    from scaleout.rundir import RunDir
    from scaleout.train.saved import Towers
    from scaleout.train.towers import embed_users

    run = RunDir(run)
    _, vectors, _ = EmbeddingSet(run.embeddings).load()
    users = set()
    for batch in iter_batches(Split(run.data).files("test"), [USER_ID], 65536, 0, None):
        users.update(np.asarray(batch[USER_ID]).astype(str).tolist())
    users = np.array(sorted(users), dtype=object)
    queries = embed_users(Towers.load(run.model, Split(run.data)).query, users).astype(np.float32)
    return vectors, queries, {"kind": "movielens", "run": str(run.root), "queries_are": "test users (one each)"}


def perturbed(vectors: np.ndarray, n: int, seed: int = SEED) -> np.ndarray:
    """``vectors`` then copies of them, each multiplied elementwise by U[0, 1) noise, to ``n`` rows."""
    if n < len(vectors):
        raise ConfigError(f"movielens-perturbed-{n}: fewer rows than the {len(vectors)} candidates")
    rng = np.random.default_rng(seed)
    out = np.empty((n, vectors.shape[1]), np.float32)
    out[:len(vectors)] = vectors
    for start in range(len(vectors), n, len(vectors)):
        stop = min(n, start + len(vectors))
        out[start:stop] = vectors[:stop - start] * rng.random((stop - start, vectors.shape[1]), np.float32)
    return out

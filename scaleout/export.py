"""Retrieval SavedModels that serve raw user ids, and recommendations from a run.

An export is a plain TensorFlow SavedModel with one signature,
``serving_default``: ``user_id`` (``[batch]`` strings) in; ``scores``
(``[batch, k]`` float32), ``movie_id`` and ``movie_title`` (``[batch, k]``
strings) out, best first. k is fixed when exporting and is the static second
dimension of every output. Loading needs TensorFlow only, not scaleout.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from scaleout import __version__
from scaleout.data.dataset import Dataset
from scaleout.embed import embed
from scaleout.errors import ArtifactError, ScaleoutError
from scaleout.fsutil import atomic_dir, write_json
from scaleout.index import BruteForce
from scaleout.model import QUERY_FEATURE, tf, tfrs
from scaleout.train import Towers

log = logging.getLogger(__name__)
EXPORT_JSON = "export.json"


@dataclasses.dataclass(frozen=True)
class Recommendation:
    user_id: str
    known_user: bool
    scores: np.ndarray  # [k]
    movie_ids: np.ndarray  # [k]
    titles: list[str]


class BruteForceServer(tf.Module):
    """The TFRS ``BruteForce`` layer over all candidates, keyed by raw user id."""

    def __init__(self, query_tower, embeddings: np.ndarray, ids: np.ndarray, titles: np.ndarray, k: int):
        super().__init__()
        self.index = tfrs.layers.factorized_top_k.BruteForce(query_tower, k=k)
        # Rows are the identifiers; ids and titles are looked up from them.
        self.index.index(tf.constant(embeddings), tf.range(len(ids), dtype=tf.int32))
        self.movie_ids = tf.constant(np.asarray(ids, dtype=object))
        self.movie_titles = tf.constant(np.asarray(titles, dtype=object))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
    def serve(self, user_id):
        scores, rows = self.index(user_id)
        return {"scores": scores, "movie_id": tf.gather(self.movie_ids, rows),
                "movie_title": tf.gather(self.movie_titles, rows)}


class Catalogue:
    """A run's trained towers, candidates and their embeddings, loaded once."""

    def __init__(self, dataset: Dataset, model_dir: str | Path):
        self.dataset = dataset
        self.towers = Towers.load(model_dir)
        candidates = dataset.candidates
        self.ids = candidates.column("movie_id").to_numpy(zero_copy_only=False).astype(str)
        self.titles = candidates.column("movie_title").to_numpy(zero_copy_only=False).astype(str)
        self.users = set(dataset.vocabulary(QUERY_FEATURE))
        start = time.monotonic()
        self.embeddings = embed(self.towers.candidate, self.ids)
        log.info("embedded %s candidates in %.2f s", f"{len(self.ids):,}", time.monotonic() - start)
        self._title_of = dict(zip(self.ids, self.titles))

    def index(self) -> BruteForce:
        return BruteForce().build(self.ids, self.embeddings)

    def recommend(self, user_id: str, k: int) -> Recommendation:
        known = user_id in self.users
        if not known:
            log.warning("user %r is not in the training vocabulary: scoring with the unknown-user embedding", user_id)
        query = self.towers.query(tf.constant([user_id])).numpy()
        scores, ids = self.index().search(query, k)
        return Recommendation(user_id, known, scores[0], ids[0], [self._title_of[i] for i in ids[0]])

    def export_brute_force(self, directory: str | Path, k: int) -> Path:
        if not 1 <= k <= len(self.ids):
            raise ScaleoutError(f"k={k} but there are {len(self.ids)} candidates; expected 1 <= k <= {len(self.ids)}")
        server = BruteForceServer(self.towers.query, self.embeddings, self.ids, self.titles, k)
        with atomic_dir(directory) as tmp:
            tf.saved_model.save(server, str(tmp / "saved_model"), signatures={"serving_default": server.serve})
            write_json(tmp / EXPORT_JSON, {
                "kind": "brute_force", "k": k, "candidates": len(self.ids),
                "embedding_dim": int(self.embeddings.shape[1]), "scaleout_version": __version__,
                "signature": {"inputs": {"user_id": "string [batch]"},
                              "outputs": {"scores": f"float32 [batch, {k}]", "movie_id": f"string [batch, {k}]",
                                          "movie_title": f"string [batch, {k}]"}},
                "dataset": str(self.dataset.path.resolve()),
            })
        log.info("exported the BruteForce retrieval model (k=%d) to %s", k, directory)
        return Path(directory)


def query_saved_model(directory: str | Path, user_ids: list[str]) -> list[Recommendation]:
    """Loads an export (see module doc) and answers ``user_ids`` with it."""
    path = Path(directory) / "saved_model"
    if not (path / "saved_model.pb").is_file():
        raise ArtifactError(f"{directory}: no exported SavedModel here (expected {path}/saved_model.pb)")
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    out = serve(user_id=tf.constant(user_ids))
    titles = out["movie_title"].numpy()
    ids = out["movie_id"].numpy()
    return [
        Recommendation(u, True, out["scores"].numpy()[i], ids[i].astype(str), [t.decode() for t in titles[i]])
        for i, u in enumerate(user_ids)
    ]


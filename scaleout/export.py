"""Retrieval SavedModels that serve raw user ids, and recommendations from a run.

An export is a plain TensorFlow SavedModel with one signature,
``serving_default``: ``user_id`` (``[batch]`` strings) in; ``scores``
(``[batch, k]`` float32), ``movie_id`` and ``movie_title`` (``[batch, k]``
strings) out, best first. k is fixed when exporting and is the static second
dimension of every output. The query tower sees each user at their latest
training timestamp. Exported with ``exclude_seen``, the model drops each user's
training items (see scaleout.seen): it retrieves k + the largest seen count
and keeps the best k unseen.

Two kinds, each the TFRS retrieval layer over the run's candidate embeddings:

  brute_force  ``tfrs.layers.factorized_top_k.BruteForce``; loads with TensorFlow alone
  scann        ``tfrs.layers.factorized_top_k.ScaNN`` holding the run's saved ScaNN
               index itself (the searcher is rebuilt from the index files, not
               trained again), so it answers as the index does in-process. It holds
               ScaNN ops: the loading process must ``import scann`` first.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from scaleout import __version__, artifacts
from scaleout.embeddings import EmbeddingSet, embed
from scaleout.errors import ArtifactError, ScaleoutError
from scaleout.fsutil import atomic_dir, write_json
from scaleout.index import BruteForce, Index, Scann
from scaleout.indexer import check_embeddings_of_model, check_query_dim, open_index
from scaleout.model import QUERY_FEATURE, embed_users, query_embeddings, tf, tfrs
from scaleout.rundir import RunDir
from scaleout.seen import SeenItems, seen_filter
from scaleout.train import Towers

log = logging.getLogger(__name__)
EXPORT_JSON = "export.json"
EXPORT_KINDS = ("brute_force", "scann")
SCANN_FIX = ("install ScaNN (pip install scann==1.4.2) and `import scann` in the loading process before "
             "tf.saved_model.load, or serve the brute_force export instead")


class ScannOpsMissing(ArtifactError):
    """A ScaNN SavedModel was loaded where ScaNN's TensorFlow ops are not registered."""


@dataclasses.dataclass(frozen=True)
class Recommendation:
    user_id: str
    known_user: bool
    scores: np.ndarray  # [k]
    movie_ids: np.ndarray  # [k]
    titles: list[str]


class _Server(tf.Module):
    """``serving_default``: the query tower, a TFRS retrieval layer whose identifiers are candidate rows, and
    optionally the seen-item filter."""

    def __init__(self, query_tower, layer, ids: np.ndarray, titles: np.ndarray, k: int, seen=None):
        super().__init__()
        self.query_tower, self.layer, self.k, self.seen = query_tower, layer, k, seen
        self.movie_ids = tf.constant(np.asarray(ids, dtype=object))
        self.movie_titles = tf.constant(np.asarray(titles, dtype=object))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
    def serve(self, user_id):
        scores, rows = self.layer(query_embeddings(self.query_tower, user_id))
        if self.seen is not None:
            scores, rows = self.seen(user_id, scores, rows, self.k)
        scores = tf.ensure_shape(scores, [None, self.k])
        rows = tf.ensure_shape(rows, [None, self.k])
        return {"scores": scores, "movie_id": tf.gather(self.movie_ids, rows),
                "movie_title": tf.gather(self.movie_titles, rows)}


def brute_force_layer(vectors: np.ndarray, k: int):
    """TFRS BruteForce over ``vectors``, taking query embeddings."""
    layer = tfrs.layers.factorized_top_k.BruteForce(k=k)
    layer.index(tf.constant(vectors), tf.range(len(vectors), dtype=tf.int32))
    return layer


def scann_layer(index: Scann, k: int):
    """The TFRS ScaNN layer answering query embeddings from ``index`` (loaded from its directory) with its default
    search settings."""
    settings = index.search_settings(k)

    class IndexedScaNN(tfrs.layers.factorized_top_k.ScaNN):
        """TFRS's ScaNN layer with a given searcher and search settings (TFRS would train its own)."""

        def call(self, queries, k=None):
            from scann.scann_ops.py import scann_ops

            searcher = scann_ops.searcher_from_module(self._serialized_searcher)
            result = searcher.search_batched_parallel(queries, **settings)
            return result.distances, result.indices

    layer = IndexedScaNN(k=k)
    layer._serialized_searcher = index.tf_state()  # the saved index's own searcher
    return layer, settings


class Catalogue:
    """A run's trained towers and candidate embeddings, loaded and checked once.

    With RUN/embeddings (``scaleout index``) the embeddings come from there and
    are checked against the model; without, they are computed here, in memory.
    """

    def __init__(self, run: RunDir):
        from scaleout.data.dataset import Dataset

        self.run = run
        self.dataset = Dataset(run.data)
        self.towers = Towers.load(run.model)
        self.users = set(self.dataset.vocabulary(QUERY_FEATURE))
        if (run.embeddings / "embeddings.json").is_file():
            self.embeddings = EmbeddingSet(run.embeddings)
            check_embeddings_of_model(run, self.embeddings)
            check_query_dim(self.towers.query, self.embeddings)
            self.ids, self.vectors, self.titles = self.embeddings.load(titles=True)
        else:
            log.info("no %s: embedding the candidates in this process (run `scaleout index` to keep them)",
                     run.embeddings)
            self.embeddings = None
            candidates = self.dataset.candidates
            self.ids = candidates.column("movie_id").to_numpy(zero_copy_only=False).astype(str)
            self.titles = candidates.column("movie_title").to_numpy(zero_copy_only=False).astype(str)
            self.vectors = embed(self.towers.candidate, self.ids)
        self._title_of = dict(zip(self.ids, self.titles))
        self._seen: SeenItems | None = None

    @property
    def seen(self) -> SeenItems:
        """The training items of every user, read from RUN/data's train split on first use."""
        if self._seen is None:
            self._seen = SeenItems.from_dataset(self.dataset)
        return self._seen

    def index(self, kind: str = "brute_force") -> Index:
        if kind == "brute_force" and self.embeddings is None:
            return BruteForce().build(self.ids, self.vectors)
        if self.embeddings is None:
            raise ArtifactError(f"{self.run.embeddings}: no candidate embeddings; run `scaleout index` first")
        return open_index(self.run, kind, self.embeddings)

    def recommend(self, user_id: str, k: int, kind: str = "brute_force", exclude_seen: bool = False) -> Recommendation:
        """The top ``k`` for ``user_id``; with ``exclude_seen``, of the candidates outside their training items."""
        known = user_id in self.users
        if not known:
            log.warning("user %r is not in the training vocabulary: scoring with the unknown-user embedding", user_id)
        query = embed_users(self.towers.query, [user_id])
        seen = self.seen.of(user_id) if exclude_seen else np.array([], str)
        # k + the seen ones, as far as the catalogue goes (a k above its size is the index's error to give).
        scores, ids = self.index(kind).search(query, max(k, min(k + len(seen), len(self.ids))))
        keep = ~np.isin(ids[0], seen)
        scores, ids = scores[0][keep][:k], ids[0][keep][:k]
        return Recommendation(user_id, known, scores, ids, [self._title_of[i] for i in ids])

    def export(self, kind: str, directory: str | Path, k: int, exclude_seen: bool = False) -> Path:
        """Writes the ``kind`` retrieval SavedModel with k results per query to ``directory``; with
        ``exclude_seen``, each user's training items are left out of their results."""
        if kind not in EXPORT_KINDS:
            raise ScaleoutError(f"unknown export kind {kind!r}; expected one of {', '.join(EXPORT_KINDS)}")
        if not 1 <= k <= len(self.ids):
            raise ScaleoutError(f"k={k} but there are {len(self.ids)} candidates; expected 1 <= k <= {len(self.ids)}")
        info: dict = {}
        options = None
        seen = None
        retrieved = k
        if exclude_seen:
            seen = seen_filter(self.seen, self.ids)
            retrieved = min(k + self.seen.max_count, len(self.ids))
            info["seen_items"] = {"users": len(self.seen.user_ids), "max_seen": self.seen.max_count,
                                    "retrieved": retrieved}
            log.info("excluding seen items: retrieving %d per query (k %d + at most %d seen)", retrieved, k,
                     self.seen.max_count)
        if kind == "scann":
            index = self.index("scann")
            layer, settings = scann_layer(index, retrieved)
            info["index"] = {"mode": index.mode, "num_leaves": index.num_leaves, "search": settings,
                             "built_from": index.meta.get("source", {})}
            options = tf.saved_model.SaveOptions(namespace_whitelist=["Scann"])
        else:
            layer = brute_force_layer(self.vectors, retrieved)
        server = _Server(self.towers.query, layer, self.ids, self.titles, k, seen)
        with atomic_dir(directory) as tmp:
            tf.saved_model.save(server, str(tmp / "saved_model"), signatures={"serving_default": server.serve},
                                options=options)
            write_json(tmp / EXPORT_JSON, {
                "kind": kind, "k": k, "exclude_seen": exclude_seen, "candidates": len(self.ids),
                "embedding_dim": int(self.vectors.shape[1]),
                "scaleout_version": __version__, "versions": artifacts.versions(),
                "needs": ["tensorflow", "scann (import scann before loading)"] if kind == "scann" else ["tensorflow"],
                "signature": {"inputs": {"user_id": "string [batch]"},
                              "outputs": {"scores": f"float32 [batch, {k}]", "movie_id": f"string [batch, {k}]",
                                          "movie_title": f"string [batch, {k}]"}},
                "embeddings": self.embeddings.fingerprint if self.embeddings else None,
                **info,
            })
        if self.embeddings is not None and Path(directory).resolve() == self.run.export(kind).resolve():
            inputs = ("query_tower", "embeddings") + (("index/scann",) if kind == "scann" else ())
            artifacts.record(self.run, f"export/{kind}", inputs=inputs, path=f"export/{kind}", k=k)
        log.info("exported the %s retrieval model (k=%d) to %s", kind, k, directory)
        return Path(directory)


def export_info(directory: str | Path) -> dict:
    meta = Path(directory) / EXPORT_JSON
    if not (Path(directory) / "saved_model" / "saved_model.pb").is_file() or not meta.is_file():
        raise ArtifactError(f"{directory}: no exported SavedModel here (expected saved_model/saved_model.pb and "
                            f"{EXPORT_JSON})")
    return json.loads(meta.read_text())


def load_saved_model(directory: str | Path):
    """The ``serving_default`` function of an export; registers ScaNN's ops first when it needs them."""
    info = export_info(directory)
    missing = None
    if info.get("kind") == "scann":
        try:
            import scann.scann_ops.py.scann_ops  # noqa: F401  (registers the Scann>* ops)
        except ImportError as exc:
            missing = exc
    try:
        return tf.saved_model.load(str(Path(directory) / "saved_model")).signatures["serving_default"]
    except (tf.errors.NotFoundError, RuntimeError) as exc:  # the error's type depends on where loading fails
        if "Op type not registered" in str(exc) and "Scann" in str(exc):
            why = f"ScaNN is not importable here ({missing})" if missing else "ScaNN's ops are not registered"
            raise ScannOpsMissing(f"{directory}: this SavedModel holds ScaNN ops but {why}; {SCANN_FIX}") from exc
        raise ArtifactError(f"{directory}: cannot load the SavedModel ({exc})") from exc


def query_saved_model(directory: str | Path, user_ids: list[str]) -> list[Recommendation]:
    """Loads an export (see module doc) and answers ``user_ids`` with it."""
    serve = load_saved_model(directory)
    out = serve(user_id=tf.constant(user_ids))
    titles = out["movie_title"].numpy()
    ids = out["movie_id"].numpy()
    return [
        Recommendation(u, True, out["scores"].numpy()[i], ids[i].astype(str), [t.decode() for t in titles[i]])
        for i, u in enumerate(user_ids)
    ]

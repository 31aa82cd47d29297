"""Retrieval SavedModels that serve raw user ids, and recommendations from a run.

An export is a plain TensorFlow SavedModel with one signature,
``serving_default``: ``user_id`` (``[batch]`` strings) in; ``scores``
(``[batch, k]`` float32), ``movie_id`` and ``movie_title`` (``[batch, k]``
strings) out, best first. k is fixed when exporting and is the static second
dimension of every output. The query tower sees each user at their latest
training timestamp. Exported with ``exclude_seen``, the model drops each user's
training items (see scaleout.serve.seen): it retrieves k + the largest seen count
and keeps the best k unseen.

A model trained with a history (``--history``) is exported with a second
signature, ``serve_items``: ``user_id`` (``[batch]``, "" for a user not seen in
training) and ``items`` (``[batch, n]`` candidate ids the user has interacted
with, "" padding, n at most ``max_items``) in, the same outputs. The items are
added to a known user's stored history; with ``exclude_seen`` they are left
out of the results too.

Two kinds, each the TFRS retrieval layer over the run's candidate embeddings:

  brute_force  ``tfrs.layers.factorized_top_k.BruteForce``; loads with TensorFlow alone
  scann        ``tfrs.layers.factorized_top_k.ScaNN`` holding the run's saved ScaNN
               index itself (the searcher is rebuilt from the index files, not
               trained again), so it answers as the index does in-process. It holds
               ScaNN ops: the loading process must ``import scann`` first.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from scaleout import __version__, artifacts
from scaleout.errors import ArtifactError, ScaleoutError, first_line
from scaleout.fsutil import atomic_dir, checksums, first_changed, write_json
from scaleout.index.scann import Scann
from scaleout.names import INDEX_KINDS, MOVIE_ID, MOVIE_TITLE, SCANN, USER_ID
from scaleout.serve.catalogue import Catalogue, Recommendation
from scaleout.serve.seen import seen_filter
from scaleout.tfenv import quiet_saving, tf, tfrs
from scaleout.train.towers import query_embeddings, uses_history

log = logging.getLogger(__name__)
EXPORT_JSON = "export.json"
ITEMS_SIGNATURE = "serve_items"
ITEMS = "items"
MAX_ITEMS = 100  # items a serve_items request may give (the export retrieves this many more than k)
SCANN_FIX = ("install ScaNN (pip install scann==1.4.2) and `import scann` in the loading process before "
             "tf.saved_model.load, or serve the brute_force export instead")


class ScannOpsMissing(ArtifactError):
    """A ScaNN SavedModel was loaded where ScaNN's TensorFlow ops are not registered."""


class _Server(tf.Module):
    """``serving_default``: the query tower, a TFRS retrieval layer whose identifiers are candidate rows, and
    optionally the seen-item filter. ``serve_items`` (a history-aware tower only): the same, from a user id
    ("" for a new user) and the items the user has interacted with, at most ``max_items`` of them."""

    def __init__(self, query_tower, layer, ids: np.ndarray, titles: np.ndarray, k: int, seen=None,
                 max_items: int = 0):
        super().__init__()
        self.query_tower, self.layer, self.k, self.seen, self.max_items = query_tower, layer, k, seen, max_items
        self.movie_ids = tf.constant(np.asarray(ids, dtype=object))
        self.movie_titles = tf.constant(np.asarray(titles, dtype=object))
        if max_items:  # only a history-aware tower takes items (saving traces every tf.function the module holds)
            self.serve_items = tf.function(self._serve_items, input_signature=[
                tf.TensorSpec([None], tf.string, name=USER_ID), tf.TensorSpec([None, None], tf.string, name=ITEMS)])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=USER_ID)])
    def serve(self, user_id):
        return self._answer(user_id, None)

    def _serve_items(self, user_id, items):
        # With exclude_seen the retrieval layer returns max_items more than k, so that k remain once the given
        # items are left out.
        tf.debugging.assert_less_equal(tf.shape(items)[1], self.max_items, message=(
            f"at most {self.max_items} items per request (the export's max_items); send the most recent ones"))
        return self._answer(user_id, items)

    def _answer(self, user_id, items):
        scores, rows = self.layer(query_embeddings(self.query_tower, user_id, history=items))
        if self.seen is not None:
            scores, rows = self.seen(user_id, scores, rows, self.k, items)
        scores = tf.ensure_shape(scores, [None, self.k])
        rows = tf.ensure_shape(rows, [None, self.k])
        return {"scores": scores, MOVIE_ID: tf.gather(self.movie_ids, rows), MOVIE_TITLE: tf.gather(self.movie_titles, rows)}


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


def export_retrieval(catalogue: Catalogue, kind: str, directory: str | Path, k: int, exclude_seen: bool = False,
                     force: bool = False, max_items: int = MAX_ITEMS) -> Path:
    """Writes the ``kind`` retrieval SavedModel of ``catalogue`` with k results per query to ``directory``;
    with ``exclude_seen``, each user's training items are left out of their results. A history-aware model
    also gets the ``serve_items`` signature (user ids and up to ``max_items`` item ids per request). An existing
    ``directory`` that is not an export is refused unless ``force``."""
    items_signature = uses_history(catalogue.towers.query)
    if kind not in INDEX_KINDS:
        raise ScaleoutError(f"unknown export kind {kind!r}; expected one of {', '.join(INDEX_KINDS)}")
    if not 1 <= k <= len(catalogue.ids):
        raise ScaleoutError(f"k={k} but there are {len(catalogue.ids)} candidates; "
                            f"expected 1 <= k <= {len(catalogue.ids)}")
    info: dict = {}
    options = None
    seen = None
    retrieved = k
    if exclude_seen:
        seen = seen_filter(catalogue.seen, catalogue.ids)
        retrieved = min(k + catalogue.seen.max_count + (max_items if items_signature else 0), len(catalogue.ids))
        info["seen_items"] = {"users": len(catalogue.seen.user_ids), "max_seen": catalogue.seen.max_count,
                              "retrieved": retrieved}
        log.info("excluding seen items: retrieving %d per query (k %d + at most %d seen)", retrieved, k,
                 catalogue.seen.max_count)
    if kind == SCANN:
        index = catalogue.index(SCANN)
        layer, settings = scann_layer(index, retrieved)
        fraction, per_result, per_k = index.cfg.search_row(retrieved)
        info["index"] = {"mode": index.mode, "num_leaves": index.num_leaves, "search_k": retrieved, "search": settings,
                         "search_row": {"leaves_fraction": fraction, "points_per_result": per_result,
                                        "reorder_per_k": per_k, "search_by_k": [list(r) for r in index.cfg.search_by_k]},
                         "built_from": index.meta.get("source", {})}
        options = tf.saved_model.SaveOptions(namespace_whitelist=["Scann"])
    else:
        layer = brute_force_layer(catalogue.vectors, retrieved)
    server = _Server(catalogue.towers.query, layer, catalogue.ids, catalogue.titles, k, seen,
                     max_items if items_signature else 0)
    signatures = {"serving_default": server.serve}
    outputs = {"scores": f"float32 [batch, {k}]", MOVIE_ID: f"string [batch, {k}]", MOVIE_TITLE: f"string [batch, {k}]"}
    described = {"serving_default": {"inputs": {USER_ID: "string [batch]"}, "outputs": outputs}}
    if items_signature:
        signatures[ITEMS_SIGNATURE] = server.serve_items
        described[ITEMS_SIGNATURE] = {"inputs": {USER_ID: "string [batch] (\"\" for a user not seen in training)",
                                                 ITEMS: f"string [batch, at most {max_items}] (\"\" pads)"},
                                      "outputs": outputs}
        info["max_items"] = max_items
    with atomic_dir(directory, EXPORT_JSON, force) as tmp:
        with quiet_saving():
            tf.saved_model.save(server, str(tmp / "saved_model"), signatures=signatures, options=options)
        write_json(tmp / EXPORT_JSON, {
            "kind": kind, "k": k, "exclude_seen": exclude_seen, "candidates": len(catalogue.ids),
            "embedding_dim": int(catalogue.vectors.shape[1]),
            "scaleout_version": __version__, "versions": artifacts.versions(),
            "needs": ["tensorflow", "scann (import scann before loading)"] if kind == SCANN else ["tensorflow"],
            "signature": described["serving_default"], "signatures": described,
            "embeddings": catalogue.embeddings.fingerprint if catalogue.embeddings else None,
            "files": checksums(tmp / "saved_model"),  # checked on loading; absent: exported before 2026-12-06
            **info,
        })
    if catalogue.embeddings is not None and Path(directory).resolve() == catalogue.run.export(kind).resolve():
        inputs = ("query_tower", "embeddings") + ((f"index/{SCANN}",) if kind == SCANN else ())
        artifacts.record(catalogue.run, f"export/{kind}", inputs=inputs, path=f"export/{kind}", k=k)
    log.info("exported the %s retrieval model (k=%d) to %s", kind, k, directory)
    return Path(directory)


def export_info(directory: str | Path) -> dict:
    meta = Path(directory) / EXPORT_JSON
    if not (Path(directory) / "saved_model" / "saved_model.pb").is_file() or not meta.is_file():
        raise ArtifactError(f"{directory}: no exported SavedModel here (expected saved_model/saved_model.pb and "
                            f"{EXPORT_JSON})")
    return json.loads(meta.read_text())


def load_saved_model(directory: str | Path, signature: str = "serving_default"):
    """The ``signature`` function of an export; registers ScaNN's ops first when it needs them."""
    info = export_info(directory)
    changed = first_changed(Path(directory) / "saved_model", info.get("files", {}))
    if changed is not None:
        raise ArtifactError(f"{directory}: saved_model/{changed} differs from its checksum in {EXPORT_JSON}: the "
                            "export is damaged or was changed; export it again (`scaleout export`)")
    missing = None
    if info.get("kind") == SCANN:
        try:
            import scann.scann_ops.py.scann_ops  # noqa: F401  (registers the Scann>* ops)
        except ImportError as exc:
            missing = exc
    try:
        signatures = tf.saved_model.load(str(Path(directory) / "saved_model")).signatures
    except (tf.errors.OpError, RuntimeError, OSError) as exc:  # the type depends on where loading fails
        if "Op type not registered" in str(exc) and "Scann" in str(exc):
            why = f"ScaNN is not importable here ({missing})" if missing else "ScaNN's ops are not registered"
            raise ScannOpsMissing(f"{directory}: this SavedModel holds ScaNN ops but {why}; {SCANN_FIX}") from exc
        raise ArtifactError(f"{directory}: cannot load the SavedModel ({first_line(exc)})") from exc
    if signature not in signatures:
        why = " (the model has no history input: train with --history to serve from items)" \
            if signature == ITEMS_SIGNATURE else ""
        raise ArtifactError(f"{directory}: the SavedModel has no {signature!r} signature{why}; it has "
                            f"{', '.join(sorted(signatures))}")
    return signatures[signature]


def query_saved_model(directory: str | Path, user_ids: list[str], items: list[list[str]] | None = None
                      ) -> list[Recommendation]:
    """Loads an export (see module doc) and answers ``user_ids`` with it; with ``items`` (per user, the ids
    of items they interacted with), through the ``serve_items`` signature."""
    return answer(load_saved_model(directory, ITEMS_SIGNATURE if items is not None else "serving_default"),
                  user_ids, items)


def answer(signature, user_ids: list[str], items: list[list[str]] | None = None) -> list[Recommendation]:
    """Answers ``user_ids`` with a signature ``load_saved_model`` returned (``serve_items`` when ``items``
    are given), so that a caller asking several times loads the SavedModel once."""
    if items is None:
        out = signature(user_id=tf.constant(user_ids))
    else:
        width = max((len(i) for i in items), default=0)
        padded = [list(i) + [""] * (width - len(i)) for i in items]
        out = signature(user_id=tf.constant(user_ids), items=tf.constant(padded, tf.string,
                                                                          shape=[len(items), width]))
    titles = out[MOVIE_TITLE].numpy()
    ids = out[MOVIE_ID].numpy()
    return [
        Recommendation(u, True, out["scores"].numpy()[i], ids[i].astype(str), [t.decode() for t in titles[i]],
                       None if items is None else list(items[i]))
        for i, u in enumerate(user_ids)
    ]

"""FactorizedTopK through the indexes: TFRS's metric on the test split with each built index as candidate source.

The model's recall and each index's recall are reported apart: beside each
index's top-k accuracy, an approximate index's recall@k against BruteForce's
answers for the same queries. Written to RUN/metrics/index_eval.json.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from scaleout.data.dataset import Dataset
from scaleout.data.tfdata import iter_batches
from scaleout.embed.embedding_set import EmbeddingSet
from scaleout.errors import ArtifactError
from scaleout.fsutil import write_json
from scaleout.index.base import Index
from scaleout.index.brute_force import BruteForce
from scaleout.index.build import check_embeddings_of_model, check_query_dim, open_index
from scaleout.names import BRUTE_FORCE, INDEX_KINDS, MOVIE_ID, SCANN, USER_ID
from scaleout.rundir import RunDir
from scaleout.tfenv import tf, tfrs
from scaleout.train.saved import Towers
from scaleout.train.towers import TIMESTAMP_FEATURE, query_embeddings, uses_timestamp

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 30.0


def index_top_k(index: Index, k: int, answers: list | None = None, **search_settings):
    """A TFRS TopK layer answering from ``index`` (for FactorizedTopK): exact for BruteForce.

    Called eagerly, it appends each batch's retrieved ids to ``answers``.
    """

    class IndexTopK(tfrs.layers.factorized_top_k.TopK):
        def __init__(self):
            super().__init__(k=k)

        def index(self, candidates, identifiers=None):
            raise NotImplementedError("IndexTopK answers from a built scaleout index")

        def call(self, queries, k=None):
            k = k or self._k

            def search(q):
                scores, ids = index.search(q, k, **search_settings)
                if answers is not None:
                    answers.append(ids)
                return scores.astype(np.float32), ids.astype(object)

            scores, ids = tf.numpy_function(search, [queries], [tf.float32, tf.string], stateful=False)
            scores.set_shape([None, k])
            ids.set_shape([None, k])
            return scores, ids

        def is_exact(self):
            return isinstance(index, BruteForce)

    return IndexTopK()


def shared_per_row(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[rows]``: how many distinct ids row i of ``a`` and row i of ``b`` have in common (``len(set(a[i]) &
    set(b[i]))``), vectorised: in each row of both sorted together (stably, ``a``'s first), a shared id is the one
    place where an id from ``a`` is followed by the same id from ``b``."""
    both = np.concatenate([a, b], axis=1)
    order = np.argsort(both, axis=1, kind="stable")
    ids = np.take_along_axis(both, order, axis=1)
    from_b = order >= a.shape[1]
    return ((ids[:, 1:] == ids[:, :-1]) & from_b[:, 1:] & ~from_b[:, :-1]).sum(axis=1)


def evaluate_through_indexes(run: RunDir, kinds: tuple[str, ...] = INDEX_KINDS,
                             ks: tuple[int, ...] = (1, 5, 10, 50, 100), batch_size: int = 4096) -> dict:
    """FactorizedTopK on the test split with each index as the candidate source; writes RUN/metrics/index_eval.json.

    Also reports each approximate index's recall@k against BruteForce's answers
    for the same test queries (the index's own loss, apart from the model's).
    """
    dataset = Dataset(run.data)
    towers, emb = Towers.load(run.model, dataset), EmbeddingSet(run.embeddings)
    check_embeddings_of_model(run, emb)
    check_query_dim(towers.query, emb)
    ids, vectors, _ = emb.load()
    row_of = {c: i for i, c in enumerate(ids)}
    indexes = {kind: open_index(run, kind, emb) for kind in kinds}
    k_max = min(max(ks), len(ids))
    ks = tuple(k for k in ks if k <= k_max)
    answers: dict[str, list[np.ndarray]] = {kind: [] for kind in kinds}  # a batch's retrieved ids, from the metrics
    # Each approximate index's overlap with BruteForce's answers, summed batch by batch (keeping every batch's
    # answers held 24 GiB at 4M test rows x k = 100).
    overlap_ks = [k for k in ks if k in (10, 100) or k == k_max]
    overlap = {kind: dict.fromkeys(overlap_ks, 0) for kind in kinds if kind != BRUTE_FORCE}
    metrics = {kind: tfrs.metrics.FactorizedTopK(candidates=index_top_k(idx, k_max, answers[kind]), ks=ks)
               for kind, idx in indexes.items()}
    start = time.monotonic()
    # As model.evaluate: each test row's own timestamp, where the query tower takes one.
    columns = [USER_ID, MOVIE_ID] + ([TIMESTAMP_FEATURE] if uses_timestamp(towers.query) else [])
    done, shown = 0, start
    for batch in iter_batches(dataset.files("test"), columns, batch_size, 0, None):
        users = np.asarray(batch[USER_ID]).astype(str).astype(object)
        movies = np.asarray(batch[MOVIE_ID]).astype(str)
        queries = query_embeddings(towers.query, users, batch.get(TIMESTAMP_FEATURE))
        try:
            true = tf.constant(vectors[[row_of[m] for m in movies]])
        except KeyError as exc:
            raise ArtifactError(f"test movie {exc.args[0]!r} has no embedding in {emb.path}") from exc
        for kind, metric in metrics.items():
            metric.update_state(queries, true, true_candidate_ids=tf.constant(movies.astype(object)))
        if BRUTE_FORCE in answers:
            exact = answers[BRUTE_FORCE].pop()
            for kind in overlap:
                approx = answers[kind].pop()
                for k in overlap_ks:
                    overlap[kind][k] += int(shared_per_row(approx[:, :k], exact[:, :k]).sum())
        for kind in kinds:
            answers[kind].clear()
        done += len(movies)
        if time.monotonic() - shown >= PROGRESS_SECONDS:
            shown = time.monotonic()
            log.info("through the indexes: %s of %s test rows, %s a second", f"{done:,}",
                     f"{dataset.counts['test']:,}", f"{done / (shown - start):,.0f}")
    seconds = time.monotonic() - start
    report: dict = {"ks": list(ks), "test_examples": dataset.counts["test"], "seconds": round(seconds, 2),
                    "embeddings": emb.fingerprint}
    for kind, metric in metrics.items():
        report[kind] = {f"factorized_top_k/top_{k}_categorical_accuracy": float(v)
                        for k, v in zip(ks, metric.result())}
        if kind == SCANN:
            report[kind]["mode"] = indexes[kind].mode
            report[kind]["search"] = {k: v for k, v in indexes[kind].search_settings(k_max).items()}
            report[kind]["search_k"] = k_max  # one search for the largest k; the smaller ks are its head
    if BRUTE_FORCE in answers:
        for kind, sums in overlap.items():
            report[kind]["recall_vs_brute_force"] = {f"@{k}": round(sums[k] / (k * max(1, done)), 4) for k in sums}
    write_json(run.index_eval_metrics, report)
    for kind in kinds:
        top = report[kind].get(f"factorized_top_k/top_{ks[-1]}_categorical_accuracy")
        log.info("through %s: test top-%d %.4f", kind, ks[-1], top)
    return report

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
from scaleout.evaluate.protocols import confidence_intervals, draw_users
from scaleout.fsutil import tree_fingerprint, write_json
from scaleout.index.base import Index
from scaleout.index.brute_force import BruteForce
from scaleout.index.build import check_embeddings_of_model, check_query_dim, open_index
from scaleout.names import BRUTE_FORCE, INDEX_KINDS, MOVIE_ID, SCANN, USER_ID
from scaleout.rundir import RunDir
from scaleout.stages import Progress
from scaleout.tfenv import tf, tfrs
from scaleout.train.run import towers_made_from
from scaleout.train.saved import Towers
from scaleout.train.towers import TIMESTAMP_FEATURE, query_embeddings, uses_timestamp

log = logging.getLogger(__name__)


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
                # A tree that finds fewer than k candidates in the leaves it searched pads its answer with NaN
                # scores (FactorizedTopK skips them) and the row of some real candidate: no id there, so that
                # neither the per-user hits nor the overlap with BruteForce count the padding.
                ids = np.where(np.isnan(scores), "", np.asarray(ids).astype(str))
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
                             ks: tuple[int, ...] = (1, 5, 10, 50, 100), batch_size: int = 4096,
                             sample_users: int = 0, seed: int = 0) -> dict:
    """FactorizedTopK on the test split with each index as the candidate source; writes RUN/metrics/index_eval.json.

    Also reports each approximate index's recall@k against BruteForce's answers
    for the same test queries (the index's own loss, apart from the model's).
    ``sample_users`` > 0 evaluates the test rows of that many test users drawn at random with ``seed`` (the
    users ``scaleout quality --sample-users`` draws with the same seed), and reports the sample and a 95%
    interval (``ci95``) beside each top-k accuracy.
    """
    dataset = Dataset(run.data)
    sample = _UserSample(dataset, sample_users, seed) if sample_users else None
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
    done = 0
    progress = Progress(log, "through the indexes", sample.rows if sample else dataset.counts["test"], "test rows",
                        "rows/s")
    for batch in iter_batches(dataset.files("test"), columns, batch_size, 0, None):
        users = np.asarray(batch[USER_ID]).astype(str)
        movies = np.asarray(batch[MOVIE_ID]).astype(str)
        times = batch.get(TIMESTAMP_FEATURE)
        if sample:
            at, keep = sample.positions(users)
            if not keep.any():
                continue
            users, movies, at = users[keep], movies[keep], at[keep]
            times = None if times is None else np.asarray(times)[keep]
        queries = query_embeddings(towers.query, users.astype(object), times)
        try:
            true = tf.constant(vectors[[row_of[m] for m in movies]])
        except KeyError as exc:
            raise ArtifactError(f"test movie {exc.args[0]!r} has no embedding in {emb.path}") from exc
        for kind, metric in metrics.items():
            metric.update_state(queries, true, true_candidate_ids=tf.constant(movies.astype(object)))
        if sample:
            sample.add(at, {kind: answers[kind][-1] for kind in kinds}, movies, ks)
        if BRUTE_FORCE in answers:
            exact = answers[BRUTE_FORCE].pop()
            for kind in overlap:
                approx = answers[kind].pop()
                for k in overlap_ks:
                    overlap[kind][k] += int(shared_per_row(approx[:, :k], exact[:, :k]).sum())
        for kind in kinds:
            answers[kind].clear()
        done += len(movies)
        progress(done)
    seconds = time.monotonic() - start
    report: dict = {"ks": list(ks), "test_examples": done, "seconds": round(seconds, 2),
                    "embeddings": emb.fingerprint,
                    "made_from": {**towers_made_from(run, ("query_tower",)), "embeddings": emb.fingerprint,
                                  **{f"index/{kind}": tree_fingerprint(run.index(kind)) for kind in kinds}}}
    if sample:
        report["sample"] = sample.describe()
        intervals = sample.intervals()
    for kind, metric in metrics.items():
        report[kind] = {f"factorized_top_k/top_{k}_categorical_accuracy": float(v)
                        for k, v in zip(ks, metric.result())}
        if sample:
            report[kind]["ci95"] = intervals[kind]
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


class _UserSample:
    """The test users drawn for a sampled evaluation, and each drawn user's rows and hits (for the intervals)."""

    def __init__(self, dataset: Dataset, users: int, seed: int):
        vocabulary = dataset.vocabulary(USER_ID)
        self.code_of = {u: i for i, u in enumerate(vocabulary)}  # the codes scaleout.evaluate.protocols.load gives
        codes = np.concatenate([self.codes(np.asarray(b[USER_ID]).astype(str))
                                for b in iter_batches(dataset.files("test"), [USER_ID], 65_536, 0, None)])
        chosen, self.population = draw_users(codes, users, seed)
        self.chosen = np.unique(codes) if chosen is None else chosen
        self.rows = int(np.isin(codes, self.chosen).sum())
        self.of_rows, self.seed = len(codes), seed
        self.per_user: dict = {"rows": np.zeros(len(self.chosen), np.int64)}
        log.info("through the indexes: a sample of %d of %d test users (%s of %s rows), seed %d", len(self.chosen),
                 self.population, f"{self.rows:,}", f"{self.of_rows:,}", seed)

    def codes(self, users: np.ndarray) -> np.ndarray:
        return np.fromiter((self.code_of.get(u, -1) for u in users), np.int64, len(users))

    def positions(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(each row's drawn user's position in the sample, whether the row's user was drawn)."""
        codes = self.codes(users)
        at = np.minimum(np.searchsorted(self.chosen, codes), len(self.chosen) - 1)
        return at, self.chosen[at] == codes

    def add(self, at: np.ndarray, retrieved: dict[str, np.ndarray], movies: np.ndarray, ks) -> None:
        """One batch's rows (``at``: their users' positions) and, per index, whether the true movie is in each
        row's top k."""
        n = len(self.chosen)
        self.per_user["rows"] += np.bincount(at, minlength=n)
        for kind, ids in retrieved.items():
            found = np.asarray(ids).astype(str) == movies[:, None]
            sums = self.per_user.setdefault(kind, {})
            for k in ks:
                hits = found[:, :k].any(axis=1)
                name = f"factorized_top_k/top_{k}_categorical_accuracy"
                sums[name] = sums.get(name, 0) + np.bincount(at, weights=hits, minlength=n)

    def describe(self) -> dict:
        return {"users": int(len(self.chosen)), "of_users": self.population, "rows": self.rows,
                "of_rows": self.of_rows, "seed": self.seed, "confidence": 0.95}

    def intervals(self) -> dict:
        return confidence_intervals(self.per_user, self.population)

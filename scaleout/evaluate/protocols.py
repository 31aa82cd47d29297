"""Honest evaluation's protocols: every test interaction ranked over the full catalogue.

Two protocols, each reporting hit rate (recall) at 1, 5, 10, 50, 100 and NDCG
at 10 and 100 per test interaction (one relevant item each):

  tutorial       every candidate ranked (TFRS FactorizedTopK's protocol: a hit
                 when fewer than k candidates score strictly above the true one)
  exclude_seen   the user's training items removed from the ranking first
                 (the tutorial's own suggestion); the true item is never removed

Candidates that score exactly as the true one does are ranked around it in a
random order, in expectation: a row tied with t others, a above it, is a hit at
k with probability clip((k - a) / (t + 1), 0, 1), and its NDCG is the mean gain
of the t + 1 places. Scores without ties rank as the strict count alone does;
a constant scorer (a zero query) scores k / n rather than every row a hit. A
``tiebreak`` orders ties instead. NaN scores are refused.

A scorer is a function ``users [b] int64 -> [b, n_items]`` scores over rows
of the user vocabulary (-1: a user outside it) and of the candidates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from scaleout.data.dataset import Dataset
from scaleout.data.tfdata import iter_batches
from scaleout.errors import ArtifactError
from scaleout.names import MOVIE_ID, USER_ID
from scaleout.stages import Progress

log = logging.getLogger(__name__)

KS = (1, 5, 10, 50, 100)
USERS_PER_BATCH = 2048
SCORES_PER_BATCH = 1 << 25  # users scored at a time x candidates: 128 MiB of float32 scores a block, so a
# catalogue of a million candidates is scored 32 users at a time rather than 2,048 (8 GiB)
NDCG_KS = (10, 100)
PROTOCOLS = ("tutorial", "exclude_seen")


@dataclass
class Split:
    """Interactions coded as rows of the user and item vocabularies; -1 for an id outside them."""

    users: np.ndarray  # [n] int64
    items: np.ndarray  # [n] int64


@dataclass
class Data:
    user_ids: np.ndarray  # [n_users] str
    item_ids: np.ndarray  # [n_items] str (the candidates)
    train: Split
    test: Split

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.user_ids), len(self.item_ids)

    def matrix(self, split: Split) -> sp.csr_matrix:
        """[n_users, n_items] binary interactions (duplicates counted once)."""
        keep = (split.users >= 0) & (split.items >= 0)
        m = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (split.users[keep], split.items[keep])),
                          shape=self.shape)
        m.data[:] = 1.0
        return m


def load(dataset: Dataset) -> Data:
    """The train and test splits of a prepared dataset, coded against its user vocabulary and candidates."""
    user_ids = dataset.vocabulary(USER_ID)
    item_ids = dataset.candidates.column(MOVIE_ID).to_numpy(zero_copy_only=False).astype(str)
    user_row = {u: i for i, u in enumerate(user_ids)}
    item_row = {m: i for i, m in enumerate(item_ids)}
    splits = {}
    for name in ("train", "test"):
        users, items = [], []
        for batch in iter_batches(dataset.files(name), [USER_ID, MOVIE_ID], 65_536, 0, None):
            users.append(np.fromiter((user_row.get(u, -1) for u in np.asarray(batch[USER_ID]).astype(str)), np.int64))
            items.append(np.fromiter((item_row.get(m, -1) for m in np.asarray(batch[MOVIE_ID]).astype(str)), np.int64))
        splits[name] = Split(np.concatenate(users), np.concatenate(items))
    return Data(user_ids, item_ids, splits["train"], splits["test"])


def rank_metrics(score_users, test: Split, seen: sp.csr_matrix | None, ks=KS, ndcg_ks=NDCG_KS,
                 batch: int = 2048, tiebreak: np.ndarray | None = None) -> dict[str, float]:
    """Hit rate and NDCG per test interaction over the full catalogue, under one protocol.

    ``score_users(users [b] int64) -> [b, n_items]`` scores; with ``seen``, each
    user's seen items (other than the true one) are ranked last. A test row whose
    item is outside the candidates counts as a miss. ``tiebreak`` ([n_items],
    distinct values) orders items of equal score, higher first. See ``rank_protocols``.
    """
    name = "exclude_seen" if seen is not None else "tutorial"
    return rank_protocols(score_users, test, {name: seen}, ks, ndcg_ks, batch, tiebreak)[name]


def rank_protocols(score_users, test: Split, protocols: dict[str, sp.csr_matrix | None], ks=KS, ndcg_ks=NDCG_KS,
                   batch: int = 2048, tiebreak: np.ndarray | None = None,
                   per_user: bool = False, label: str = "scores") -> dict[str, dict[str, float]]:
    """Hit rate and NDCG per test interaction under several protocols ({name: seen items or None}), scoring each
    test user once: test rows are grouped by user, ``batch`` users scored at a time, and every protocol ranks
    the rows of those users from the same scores.

    A row's rank counts the candidates scoring strictly above its true item (with
    ``tiebreak``: above, or equal and ahead on the tiebreak; without, those equal
    to it are taken in random order, in expectation: see the module doc), the
    user's seen items left out under a protocol with ``seen`` (never the true
    item). Scores holding NaN raise ArtifactError. With
    ``per_user``, ``out["per_user"]`` holds each test user's test rows and, per
    protocol and metric, the sum over that user's rows (for confidence intervals). Progress is logged under
    ``label`` (scaleout.stages.Progress).
    """
    n = len(test.users)
    names = [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ndcg_ks]
    all_users, all_rows = np.unique(test.users, return_counts=True)
    sums = {p: {m: np.zeros(len(all_users)) for m in names} for p in protocols}
    keep = np.flatnonzero(test.items >= 0)  # an item outside the candidates is a miss: no rank to add
    order = keep[np.argsort(test.users[keep], kind="stable")]
    users_sorted, items_sorted = test.users[order], test.items[order]
    unique, first = np.unique(users_sorted, return_index=True)
    slot = np.searchsorted(all_users, unique)  # each scored user's place among all test users
    bounds = np.append(first, len(order))
    progress = Progress(log, label, len(order), "test rows ranked", "rows/s")
    for u0 in range(0, len(unique), batch):
        users = unique[u0:u0 + batch]
        lo, hi = bounds[u0], bounds[min(u0 + batch, len(unique))]
        which = np.repeat(np.arange(len(users)), np.diff(bounds[u0:u0 + len(users) + 1]))  # row -> user in batch
        items = items_sorted[lo:hi]
        scores = np.asarray(score_users(users), dtype=np.float32)
        nan = np.isnan(scores).any(axis=1)
        if nan.any():
            raise ArtifactError(f"{label}: the scores of {int(nan.sum())} of {len(users)} test users in a batch hold "
                                f"NaN (the first: user row {int(users[nan][0])}, -1 is a user outside the "
                                "vocabulary); expected finite scores (a model whose training diverged?)")
        for name, seen in protocols.items():
            masked = scores
            if seen is not None:
                masked = scores.copy()
                mask = seen[np.maximum(users, 0)].toarray().astype(bool)
                mask[users < 0] = False
                masked[mask] = -np.inf  # the true item too: it is never counted above itself
            rank, ties = _ranks(masked, scores[which, items], which, items, tiebreak, batch)
            at = slot[u0:u0 + len(users)]
            for k in ks:
                hit = np.clip((k - rank) / (ties + 1.0), 0.0, 1.0)  # 1 or 0 without ties
                sums[name][f"recall@{k}"][at] += np.bincount(which, weights=hit, minlength=len(users))
            for k in ndcg_ks:
                gain = np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
                tied = ties > 0
                if tied.any():  # the mean gain of places rank .. rank + ties
                    total = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))])
                    place, past = np.minimum(rank[tied], k), np.minimum(rank[tied] + ties[tied] + 1, k)
                    gain[tied] = (total[past] - total[place]) / (ties[tied] + 1.0)
                sums[name][f"ndcg@{k}"][at] += np.bincount(which, weights=gain, minlength=len(users))
        progress(hi)
    out = {name: {m: float(sums[name][m].sum()) / n if n else 0.0 for m in names} for name in protocols}
    if per_user:
        out["per_user"] = {"rows": all_rows, **sums}
    return out


def confidence_intervals(per_user: dict, population_users: int, z: float = 1.96) -> dict[str, dict[str, list]]:
    """95% intervals (z = 1.96) of each metric from a random sample of users: the metric is a ratio (hits over
    rows) of per-user sums, so its standard error is the ratio estimator's over users, with the finite-population
    correction for sampling ``len(rows)`` of ``population_users`` users without replacement."""
    rows = per_user["rows"].astype(np.float64)
    m = len(rows)
    out = {}
    for name, metrics in per_user.items():
        if name == "rows":
            continue
        out[name] = {}
        for metric, y in metrics.items():
            r = y.sum() / rows.sum()
            if m < 2:
                out[name][metric] = [0.0, 1.0]
                continue
            resid = y - r * rows
            var = (1.0 - m / population_users) * (resid ** 2).sum() / (m - 1) / m / rows.mean() ** 2
            half = z * float(np.sqrt(max(var, 0.0)))
            out[name][metric] = [float(max(0.0, r - half)), float(min(1.0, r + half))]
    return out


def _ranks(scores: np.ndarray, true: np.ndarray, which: np.ndarray, items: np.ndarray,
           tiebreak: np.ndarray | None, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Per test row, ``block`` rows at a time: (candidates of its user's ``scores`` row ranked above ``true``,
    the other candidates scoring exactly ``true``: none with a ``tiebreak``, which ranks them)."""
    rank, ties = np.empty(len(which), np.int64), np.zeros(len(which), np.int64)
    for r0 in range(0, len(which), block):
        rows = scores[which[r0:r0 + block]]
        t = true[r0:r0 + block, None]
        above = rows > t
        if tiebreak is not None:
            above |= (rows == t) & (tiebreak[None, :] > tiebreak[items[r0:r0 + block], None])
        else:  # the true item's own entry is t unless a protocol removed it (-inf)
            own = rows[np.arange(len(rows)), items[r0:r0 + block]] == t[:, 0]
            ties[r0:r0 + block] = (rows == t).sum(axis=1) - own
        rank[r0:r0 + block] = above.sum(axis=1)
    return rank, ties


def evaluate_scores(score_users, data: Data, tiebreak: np.ndarray | None = None,
                    population_users: int = 0, label: str = "scores", per_user: bool = False) -> dict:
    """Both protocols for one scorer, each test user scored once. With ``population_users`` (the test users a
    sample was drawn from), each protocol also gets ``ci95``: a 95% interval per metric. With ``per_user``,
    ``out["per_user"]`` keeps each test user's sums (``rank_protocols``; for scaleout.evaluate.paired)."""
    batch = max(1, min(USERS_PER_BATCH, SCORES_PER_BATCH // max(1, data.shape[1])))
    out = rank_protocols(score_users, data.test, {"tutorial": None, "exclude_seen": data.matrix(data.train)},
                         batch=batch, tiebreak=tiebreak, per_user=per_user or bool(population_users), label=label)
    if population_users:
        for name, ci in confidence_intervals(out["per_user"], population_users).items():
            out[name]["ci95"] = ci
    if not per_user:
        out.pop("per_user", None)
    return out


def sample_users(test: Split, users: int, seed: int = 0) -> tuple[Split, int]:
    """(the test rows of ``users`` test users drawn at random with ``seed``, the number of test users drawn from).
    Every row of a drawn user is kept, so per-user effects stay whole; a sample as large as the population is
    the whole split."""
    chosen, population = draw_users(test.users, users, seed)
    if chosen is None:
        return test, population
    keep = np.isin(test.users, chosen)
    return Split(test.users[keep], test.items[keep]), population


def draw_users(codes: np.ndarray, users: int, seed: int = 0) -> tuple[np.ndarray | None, int]:
    """(``users`` of the distinct user codes in ``codes`` drawn at random with ``seed``, sorted, or None when the
    sample would be every one; the number of distinct users). The draw of ``sample_users`` and of the
    evaluation through the indexes, so that the same seed picks the same users in both."""
    population = np.unique(codes)
    if users >= len(population):
        return None, len(population)
    return np.sort(np.random.default_rng(seed).choice(population, users, replace=False)), len(population)
